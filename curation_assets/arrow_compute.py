"""`pyarrow.compute` for code that a type checker reads.

pyarrow.compute makes its kernels (utf8_length, list_flatten, ...) in its module globals at import time and pyarrow
ships no type stubs, so pyright cannot see them; modules take `pc` from here (typed Any) instead of
`import pyarrow.compute as pc`. At run time it is the very same module.
"""

from __future__ import annotations

from typing import Any

import pyarrow.compute as _pc

pc: Any = _pc
