#!/usr/bin/env python
"""Shim for `hf-vit-push` (hf_vit.commands.push): the same tool, run from a checkout."""

import sys

from hf_vit.commands.push import main

sys.exit(main())
