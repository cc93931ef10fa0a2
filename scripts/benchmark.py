#!/usr/bin/env python
"""Shim for `hf-vit-benchmark` (hf_vit.commands.benchmark): the same tool, run from a checkout."""

import sys

from hf_vit.commands.benchmark import main

sys.exit(main())
