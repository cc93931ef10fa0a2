#!/usr/bin/env python
"""Shim for `hf-vit-predict` (hf_vit.commands.predict): the same tool, run from a checkout."""

import sys

from hf_vit.commands.predict import main

sys.exit(main())
