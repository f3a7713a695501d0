"""File input and output shared by every stage: atomic writes, JSON reading, safe pickles.

* :func:`atomic_write_bytes` / :func:`atomic_write_text`: temp file in the destination folder,
  then rename, so a reader never sees a half-written file; :class:`Commit`: several files
  committed as a whole; :func:`check_outputs`: an output never names an input;
* :mod:`.images`: image paths kept inside the image root, images checked before decoding;
  :mod:`.limits`: the bounds on sizes and numbers an input may declare;
* :func:`read_json`: UTF-8 JSON with errors naming the file, line and column;
* :func:`read_bytes`, :func:`load_pickle`, :func:`loads_pickle`, :class:`SafeUnpickler`: pickles
  that can build plain data only and never run code.
"""

from .atomic import Commit, atomic_write_bytes, atomic_write_text, check_outputs, ensure_writable
from .jsonfile import loads_json, read_json
from .pickles import NumpyUnpickler, SafeUnpickler, load_pickle, loads_pickle, read_bytes

__all__ = [
           "Commit",
           "NumpyUnpickler",
           "SafeUnpickler",
           "atomic_write_bytes",
           "atomic_write_text",
           "check_outputs",
           "ensure_writable",
           "load_pickle",
           "loads_json",
           "loads_pickle",
           "read_bytes",
           "read_json",
]
