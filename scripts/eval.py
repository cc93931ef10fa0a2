#!/usr/bin/env python
"""Shim for `hf-vit-eval` (hf_vit.commands.eval): the same tool, run from a checkout."""

import sys

from hf_vit.commands.eval import main

sys.exit(main())
