"""File input and output shared by every stage: atomic writes, JSON reading, safe pickles.

* :func:`atomic_write_bytes` / :func:`atomic_write_text`: temp file in the destination folder,
  then rename, so a reader never sees a half-written file;
* :func:`read_json`: UTF-8 JSON with errors naming the file, line and column;
* :func:`read_bytes`, :func:`load_pickle`, :func:`loads_pickle`, :class:`SafeUnpickler`: pickles
  that can build plain data only and never run code.
"""

from .atomic import atomic_write_bytes, atomic_write_text
from .jsonfile import loads_json, read_json
from .pickles import NumpyUnpickler, SafeUnpickler, load_pickle, loads_pickle, read_bytes

__all__ = ["NumpyUnpickler", "SafeUnpickler", "atomic_write_bytes", "atomic_write_text", "load_pickle",
           "loads_json", "loads_pickle", "read_bytes", "read_json"]
