#!/usr/bin/env python
"""Shim for `hf-vit-finetune` (hf_vit.commands.finetune): the same tool, run from a checkout."""

import sys

from hf_vit.commands.finetune import main

sys.exit(main())
