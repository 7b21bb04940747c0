"""libsnap_ffi through ctypes, as a Python app would bind it."""

import ctypes
import json

# The event string is the callee's to free: c_void_p, not c_char_p.
EVENT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)


class SnapError(Exception):
    def __init__(self, code, message, result):
        super().__init__(f"snap returned {code}: {message}")
        self.code = code
        self.message = message
        self.result = result


class Snap:
    def __init__(self, lib_path):
        lib = ctypes.CDLL(lib_path)
        vp, cp = ctypes.c_void_p, ctypes.c_char_p
        out = ctypes.POINTER(ctypes.c_void_p)
        sigs = {
            "snap_open": (vp, [cp, cp]),
            "snap_close": (None, [vp]),
            "snap_cancel": (None, [vp]),
            "snap_create": (ctypes.c_int32, [vp, cp, EVENT, vp, out]),
            "snap_restore": (ctypes.c_int32, [vp, cp, EVENT, vp, out]),
            "snap_list": (ctypes.c_int32, [vp, out]),
            "snap_gc": (ctypes.c_int32, [vp, cp, out]),
            "snap_migration_begin": (ctypes.c_int32, [vp, cp, out]),
            "snap_migration_end": (ctypes.c_int32, [vp, cp, ctypes.c_int32, out]),
            "snap_migration_unfinished": (ctypes.c_int32, [vp, cp, out]),
            "snap_last_error": (cp, []),
            "snap_free": (None, [vp]),
            "snap_version": (cp, []),
        }
        for name, (res, args) in sigs.items():
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
        self.lib = lib

    def on_event(self, handle):
        """A callback for handle(event as a dict); frees each event."""

        def cb(ptr, _user_data):
            try:
                handle(json.loads(ctypes.string_at(ptr).decode()))
            finally:
                self.lib.snap_free(ptr)

        return EVENT(cb)

    def last_error(self):
        e = self.lib.snap_last_error()
        return e.decode() if e is not None else None

    def call(self, fn, *args, ok=(0,)):
        """Call fn with args plus a result pointer; returns (code, result)."""
        out = ctypes.c_void_p()
        code = fn(*args, ctypes.byref(out))
        result = None
        if out.value:
            result = json.loads(ctypes.string_at(out.value).decode())
            self.lib.snap_free(out)
        if code not in ok:
            raise SnapError(code, self.last_error(), result)
        return code, result

    def open(self, path, **options):
        r = self.lib.snap_open(path.encode(), json.dumps(options).encode())
        if not r:
            raise SnapError(1, self.last_error(), None)
        return r


def req(obj):
    return json.dumps(obj).encode()
