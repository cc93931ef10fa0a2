#!/usr/bin/env python
"""Shim for `hf-vit-pretrain` (hf_vit.commands.pretrain): the same tool, run from a checkout."""

import sys

from hf_vit.commands.pretrain import main

sys.exit(main())
