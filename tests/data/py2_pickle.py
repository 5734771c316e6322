"""Pickles as the distributed CIFAR batches are: written by Python 2, ``bytes`` as Python 2 ``str``, protocol 2.

They load as b'data' with ``encoding="bytes"`` and as 'data' with ``encoding="latin1"`` (torchvision's choice), like
the real files; the dataset and safe-unpickler tests write their batches with :func:`dump_py2`.
"""

import io
import pickle
import struct


class _Py2Pickler(pickle._Pickler):
    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        n = len(obj)
        self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj if n < 256 else
                   pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def dump_py2(path, obj):
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    path.write_bytes(buf.getvalue())
