#!/usr/bin/env python
"""Shim for `hf-vit-attention` (hf_vit.commands.attention): the same tool, run from a checkout."""

import sys

from hf_vit.commands.attention import main

sys.exit(main())
