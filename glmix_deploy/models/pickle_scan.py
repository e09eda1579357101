"""Check a pickle's declared sizes, indices and nesting before the C unpickler trusts them.

``pickle.Unpickler`` (the C one) believes what the stream declares: ``BINBYTES8`` and
``BYTEARRAY8`` allocate their declared length before reading a byte of it (a 12-byte pickle can
ask for a terabyte); ``BINPUT``/``LONG_BINPUT`` grow the memo to twice the given index and zero
every new slot (one flipped bit in an index made a 20 GB memo and got the process killed); a
chain of ``TUPLE1`` opcodes builds a tuple nested a million deep whose hash (a dict key)
overflows the C stack; ``LONG4`` builds integers too long for ``str()``.

``scan_pickle`` walks the opcodes with ``pickletools.genops`` (pure Python: it reads each
declared length from a ``BytesIO``, which hands out only the bytes that exist) and follows the
unpickler's stack abstractly, one nesting depth per object. A pickle passes when every length
fits in the bytes left, every memo index is below the pickle's own size (so the memo stays
within 16 bytes per pickle byte), no object nests deeper than ``MAX_NESTING`` and no integer
exceeds ``MAX_INT_BITS``. It executes nothing and allocates O(len(data)).

The walk costs about a microsecond per opcode, and a pickle read from a deflated zip member can
hold ~1000 opcodes per byte of file; ``max_opcodes`` lets the caller bound the walk by what the
file holds (a torch.save'd training checkpoint of the largest GLNet release has ~50k opcodes).
"""

from __future__ import annotations

import pickletools

__all__ = ["MAX_INT_BITS", "MAX_NESTING", "PickleScanError", "scan_pickle"]

# Real checkpoints nest ~10-40 deep (a hydra config adds a few levels per config level).
MAX_NESTING = 256
# str() of a larger int raises ValueError (Python's 4300-digit limit for int <-> str).
MAX_INT_BITS = 14_000

# Opcode families, by how they move the unpickler's stack.
_LEAF, _EMPTY, _MARK, _FROM_MARK, _CALL, _INTO_TOP, _INTO_TOP_FROM_MARK = range(7)
_PUT, _MEMOIZE, _GET, _DUP, _POP, _POP_MARK, _FRAME, _NOOP, _STOP = range(7, 16)
_FAMILIES: dict[str, tuple[int, int]] = {  # name -> (family, items popped)
    **dict.fromkeys((
        "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "STRING", "BINSTRING",
        "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "UNICODE",
        "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "NONE", "NEWTRUE", "NEWFALSE", "FLOAT",
        "BINFLOAT", "GLOBAL", "PERSID", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER"), (_LEAF, 0)),
    **dict.fromkeys(("EMPTY_LIST", "EMPTY_TUPLE", "EMPTY_DICT", "EMPTY_SET"), (_EMPTY, 0)),
    **dict.fromkeys(("TUPLE", "LIST", "DICT", "FROZENSET", "OBJ", "INST"), (_FROM_MARK, 0)),
    **dict.fromkeys(("APPENDS", "SETITEMS", "ADDITEMS"), (_INTO_TOP_FROM_MARK, 0)),
    **dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT"), (_PUT, 0)),
    **dict.fromkeys(("GET", "BINGET", "LONG_BINGET"), (_GET, 0)),
    **dict.fromkeys(("PROTO", "READONLY_BUFFER"), (_NOOP, 0)),
    "TUPLE1": (_CALL, 1), "TUPLE2": (_CALL, 2), "TUPLE3": (_CALL, 3), "REDUCE": (_CALL, 2),
    "NEWOBJ": (_CALL, 2), "NEWOBJ_EX": (_CALL, 3), "BINPERSID": (_CALL, 1),
    "STACK_GLOBAL": (_CALL, 2), "APPEND": (_INTO_TOP, 1), "SETITEM": (_INTO_TOP, 2),
    "BUILD": (_INTO_TOP, 1), "MARK": (_MARK, 0), "MEMOIZE": (_MEMOIZE, 0), "DUP": (_DUP, 0),
    "POP": (_POP, 0), "POP_MARK": (_POP_MARK, 0), "FRAME": (_FRAME, 0), "STOP": (_STOP, 0),
}
_BY_CODE = {op.code: _FAMILIES[op.name] for op in pickletools.opcodes}


class PickleScanError(ValueError):
    """The pickle declares something its bytes cannot back; the message says what and where."""


def scan_pickle(data: bytes | bytearray, max_opcodes: int | None = None) -> None:
    """Raise PickleScanError unless `data` is a pickle whose every declared size, memo index,
    nesting depth and integer is bounded by its own length (see the module docstring), and
    that has at most `max_opcodes` opcodes (when given).

    The walk mirrors the unpickler's stack: each object is a one-item list holding its nesting
    depth (shared by every stack slot and memo entry that refers to it, so items added to a
    container later deepen it everywhere)."""
    size = len(data)
    stack: list[list[int]] = []
    marks: list[int] = []
    memo: dict[int, list[int]] = {}
    fence = 0  # stack length at the innermost MARK
    pos = 0
    opcodes_left = len(data) if max_opcodes is None else max_opcodes

    def fail(what: str) -> PickleScanError:
        return PickleScanError(f"{what} at byte {pos} of the {size}-byte pickle")

    try:
        for opcode, arg, at in pickletools.genops(data):
            pos = at or 0
            opcodes_left -= 1
            if opcodes_left < 0:
                raise fail(f"more than {max_opcodes} opcodes")
            family, popped = _BY_CODE[opcode.code]
            if family == _LEAF:
                if arg.__class__ is int and arg.bit_length() > MAX_INT_BITS:
                    raise fail(f"an integer of {arg.bit_length()} bits")
                stack.append([0])
            elif family == _PUT:
                if arg.__class__ is not int or not 0 <= arg < size:
                    raise fail(f"memo index {arg} beyond the pickle's size")
                if len(stack) <= fence:
                    raise fail("stack underflow")
                memo[arg] = stack[-1]
            elif family == _GET:
                if arg not in memo:
                    raise fail(f"memo index {arg} read before it is written")
                stack.append(memo[arg])
            elif family == _CALL:
                if len(stack) - popped < fence:
                    raise fail("stack underflow")
                depth = 1 + max(item[0] for item in stack[-popped:])
                del stack[-popped:]
                if depth > MAX_NESTING:
                    raise fail(f"objects nested more than {MAX_NESTING} deep")
                stack.append([0 if opcode.name == "STACK_GLOBAL" else depth])
            elif family == _INTO_TOP or family == _INTO_TOP_FROM_MARK:
                if family == _INTO_TOP:
                    if len(stack) - popped <= fence:
                        raise fail("stack underflow")
                    items = stack[-popped:]
                    del stack[-popped:]
                else:
                    if not marks:
                        raise fail("no MARK to pop to")
                    items = stack[fence:]
                    del stack[fence:]
                    marks.pop()
                    fence = marks[-1] if marks else 0
                    if len(stack) <= fence:
                        raise fail("stack underflow")
                if items:
                    target = stack[-1]
                    target[0] = max(target[0], 1 + max(item[0] for item in items))
                    if target[0] > MAX_NESTING:
                        raise fail(f"objects nested more than {MAX_NESTING} deep")
            elif family == _MARK:
                marks.append(len(stack))
                fence = len(stack)
            elif family == _FROM_MARK or family == _POP_MARK:
                if not marks:
                    raise fail("no MARK to pop to")
                depth = 1 + max((item[0] for item in stack[fence:]), default=0)
                del stack[fence:]
                marks.pop()
                fence = marks[-1] if marks else 0
                if family == _FROM_MARK:
                    if depth > MAX_NESTING:
                        raise fail(f"objects nested more than {MAX_NESTING} deep")
                    stack.append([depth])
            elif family == _EMPTY:
                stack.append([1])
            elif family == _MEMOIZE:
                if len(stack) <= fence:
                    raise fail("stack underflow")
                memo[len(memo)] = stack[-1]
            elif family == _DUP:
                if len(stack) <= fence:
                    raise fail("stack underflow")
                stack.append(stack[-1])
            elif family == _POP:
                if len(stack) > fence:
                    stack.pop()
                elif marks:
                    marks.pop()
                    fence = marks[-1] if marks else 0
                else:
                    raise fail("stack underflow")
            elif family == _FRAME:
                if arg > size - pos - 9:
                    raise fail(f"a frame of {arg} bytes")
            elif family == _STOP:
                return
    except PickleScanError:
        raise
    except Exception as exc:  # genops: ValueError for short data / unknown opcodes, ...
        detail = " ".join(str(exc).split())[:160]
        raise PickleScanError(f"malformed pickle ({type(exc).__name__}: {detail})") from exc
    raise fail("no STOP opcode")  # unreachable: genops raises on input without STOP
