"""Write pickles the way Python 2's cPickle (protocol 2) does, to test grdkit's Py2 reader.

Python 3 cannot produce them: it pickles ``bytes`` through ``_codecs.encode``, while Python 2
wrote its ``str`` with the SHORT_BINSTRING / BINSTRING opcodes, which Python 3 reads back as bytes
(``encoding="bytes"``). Here ``bytes`` values are emitted as Python 2 ``str`` and ``str`` values as
Python 2 ``unicode`` (BINUNICODE).
"""

import struct


def dumps_py2(obj) -> bytes:
    out = bytearray(b"\x80\x02")  # PROTO 2

    def w(o):
        if o is None:
            out.extend(b"N")
        elif o is True:
            out.extend(b"\x88")
        elif o is False:
            out.extend(b"\x89")
        elif isinstance(o, int):
            if 0 <= o < 256:
                out.extend(b"K" + bytes([o]))
            elif -(2**31) <= o < 2**31:
                out.extend(b"J" + struct.pack("<i", o))
            else:
                raw = o.to_bytes((o.bit_length() + 8) // 8, "little", signed=True)
                out.extend(b"\x8a" + bytes([len(raw)]) + raw)
        elif isinstance(o, float):
            out.extend(b"G" + struct.pack(">d", o))
        elif isinstance(o, bytes):
            if len(o) < 256:
                out.extend(b"U" + bytes([len(o)]) + o)
            else:
                out.extend(b"T" + struct.pack("<i", len(o)) + o)
        elif isinstance(o, str):
            data = o.encode("utf-8")
            out.extend(b"X" + struct.pack("<I", len(data)) + data)
        elif isinstance(o, list):
            out.extend(b"]")
            if o:
                out.extend(b"(")
                for v in o:
                    w(v)
                out.extend(b"e")  # APPENDS
        elif isinstance(o, dict):
            out.extend(b"}")
            if o:
                out.extend(b"(")
                for k, v in o.items():
                    w(k)
                    w(v)
                out.extend(b"u")  # SETITEMS
        else:
            raise TypeError(type(o))

    w(obj)
    out.extend(b".")
    return bytes(out)


def to_py2_strings(obj):
    """Turn every str (keys and values) into bytes, as Python 2 refer pickles held them."""
    if isinstance(obj, str):
        return obj.encode("utf-8")
    if isinstance(obj, dict):
        return {to_py2_strings(k): to_py2_strings(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_py2_strings(v) for v in obj]
    return obj
