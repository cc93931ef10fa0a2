#!/usr/bin/env python
"""Shim for `hf-vit-convert` (hf_vit.commands.convert): the same tool, run from a checkout."""

import sys

from hf_vit.commands.convert import main

sys.exit(main())
