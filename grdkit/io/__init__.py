"""File input and output shared by every stage: atomic writes, JSON reading, safe pickles.

* :func:`atomic_write_bytes` / :func:`atomic_write_text`: temp file in the destination folder,
  then rename, so a reader never sees a half-written file; :class:`Commit`: several files
  committed as a whole; :func:`check_outputs`: an output never names an input;
* :mod:`.images`: image paths kept inside the image root, images checked before decoding;
  :mod:`.limits`: the bounds on sizes and numbers an input may declare;
* :mod:`.files`: the one checked opener of every input (:func:`open_regular`,
  :func:`read_bytes`, :func:`check_regular`): regular files only, size bounded before reading,
  never blocking on a FIFO;
* :func:`read_json`: UTF-8 JSON with errors naming the file, line and column;
* :func:`load_pickle`, :func:`loads_pickle`, :class:`SafeUnpickler`: pickles
  that can build plain data only and never run code.
"""

from .atomic import (
                     Commit,
                     atomic_write_bytes,
                     atomic_write_text,
                     check_outputs,
                     ensure_writable,
                     lock_folder,
)
from .files import LIMITS, check_regular, open_regular, read_bytes
from .jsonfile import loads_json, read_json
from .pickles import NumpyUnpickler, SafeUnpickler, load_pickle, loads_pickle

__all__ = [
           "LIMITS",
           "Commit",
           "NumpyUnpickler",
           "SafeUnpickler",
           "atomic_write_bytes",
           "atomic_write_text",
           "check_outputs",
           "check_regular",
           "ensure_writable",
           "load_pickle",
           "loads_json",
           "loads_pickle",
           "lock_folder",
           "open_regular",
           "read_bytes",
           "read_json",
]
