#!/usr/bin/env python
"""Shim for `hf-vit-features` (hf_vit.commands.features): the same tool, run from a checkout."""

import sys

from hf_vit.commands.features import main

sys.exit(main())
