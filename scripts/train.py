#!/usr/bin/env python
"""Shim for `hf-vit-train` (hf_vit.commands.train): the same tool, run from a checkout."""

import sys

from hf_vit.commands.train import main

sys.exit(main())
