"""Every tensor element type the package meets, one row each, with its name in each library's terms.

The package names a dtype numpy-style ('float32', 'float16', 'int8', ...; ONNX's lower-cased name
where numpy has none: 'bfloat16', 'float8e4m3fn'): that is `TensorSpec.dtype`, the sidecar's I/O
entries and every report. The columns translate it: ONNX TensorProto element type and its name,
onnxruntime's NodeArg type string, Triton's config.pbtxt TYPE_*, TensorRT's DataType member, torch's
dtype attribute and the short precision name reports use. None: that library has no such type.

Plain values only (no onnx, tensorrt or torch import), so every layer can read it. Polygraphy's one
`DataType` mapping is the model: add a type by adding a row.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DType:
    name: str | None  # the package's name; None for an ONNX type no artifact of ours can hold
    onnx: int  # TensorProto element type
    onnx_name: str  # TensorProto.DataType name
    ort: str | None = None  # onnxruntime NodeArg.type
    triton: str | None = None  # config.pbtxt data_type
    tensorrt: str | None = None  # tensorrt.DataType member
    torch: str | None = None  # torch dtype attribute
    short: str | None = None  # precision-style name ('fp16') of a float type


_T = DType
DTYPES: tuple[DType, ...] = (
    _T(None, 0, "UNDEFINED"),
    _T("float32", 1, "FLOAT", "tensor(float)", "TYPE_FP32", "FLOAT", "float32", "fp32"),
    _T("uint8", 2, "UINT8", "tensor(uint8)", "TYPE_UINT8", "UINT8", "uint8"),
    _T("int8", 3, "INT8", "tensor(int8)", "TYPE_INT8", "INT8", "int8"),
    _T("uint16", 4, "UINT16", "tensor(uint16)", "TYPE_UINT16", None, "uint16"),
    _T("int16", 5, "INT16", "tensor(int16)", "TYPE_INT16", None, "int16"),
    _T("int32", 6, "INT32", "tensor(int32)", "TYPE_INT32", "INT32", "int32"),
    _T("int64", 7, "INT64", "tensor(int64)", "TYPE_INT64", "INT64", "int64"),
    _T("string", 8, "STRING", "tensor(string)", "TYPE_STRING"),
    _T("bool", 9, "BOOL", "tensor(bool)", "TYPE_BOOL", "BOOL", "bool"),
    _T("float16", 10, "FLOAT16", "tensor(float16)", "TYPE_FP16", "HALF", "float16", "fp16"),
    _T("float64", 11, "DOUBLE", "tensor(double)", "TYPE_FP64", None, "float64", "fp64"),
    _T("uint32", 12, "UINT32", "tensor(uint32)", "TYPE_UINT32", None, "uint32"),
    _T("uint64", 13, "UINT64", "tensor(uint64)", "TYPE_UINT64", None, "uint64"),
    _T("complex64", 14, "COMPLEX64", "tensor(complex64)", None, None, "complex64"),
    _T("complex128", 15, "COMPLEX128", "tensor(complex128)", None, None, "complex128"),
    _T("bfloat16", 16, "BFLOAT16", "tensor(bfloat16)", "TYPE_BF16", "BF16", "bfloat16", "bf16"),
    _T("float8e4m3fn", 17, "FLOAT8E4M3FN", "tensor(float8e4m3fn)", None, "FP8", "float8_e4m3fn"),
    _T("float8e4m3fnuz", 18, "FLOAT8E4M3FNUZ", "tensor(float8e4m3fnuz)", None, None, "float8_e4m3fnuz"),
    _T("float8e5m2", 19, "FLOAT8E5M2", "tensor(float8e5m2)", None, None, "float8_e5m2"),
    _T("float8e5m2fnuz", 20, "FLOAT8E5M2FNUZ", "tensor(float8e5m2fnuz)", None, None, "float8_e5m2fnuz"),
    _T("uint4", 21, "UINT4", "tensor(uint4)"),
    _T("int4", 22, "INT4", "tensor(int4)"),
    _T("float4e2m1", 23, "FLOAT4E2M1", "tensor(float4e2m1)"),
    _T(None, 24, "FLOAT8E8M0"),
    _T(None, 25, "UINT2"),
    _T(None, 26, "INT2"),
    _T(None, 27, "FLOAT6E2M3"),
    _T(None, 28, "FLOAT6E3M2"),
)
del _T

_BY_ONNX = {row.onnx: row for row in DTYPES}
_BY_NAME = {row.name: row for row in DTYPES if row.name}
_BY_ORT = {row.ort: row for row in DTYPES if row.ort}
_BY_TENSORRT = {row.tensorrt: row for row in DTYPES if row.tensorrt}
# The spellings a hand-written or older sidecar may use, lower-cased: TensorRT's ('half', 'bf16'),
# ONNX's ('float', 'double') and the short ones ('fp16').
_BY_ANY_NAME = {**{r.onnx_name.lower(): r for r in DTYPES if r.name},
                **{r.tensorrt.lower(): r for r in _BY_TENSORRT.values()},
                **{r.short: r for r in DTYPES if r.short}, **_BY_NAME}


def by_onnx(elem_type: int) -> DType | None:
    """The row of a TensorProto element type."""
    return _BY_ONNX.get(int(elem_type))


def by_name(name: str) -> DType | None:
    """The row of a package dtype name ('float32', ...)."""
    return _BY_NAME.get(name)


def by_ort(type_string: str) -> DType | None:
    """The row of an onnxruntime type string ('tensor(float)', ...)."""
    return _BY_ORT.get(type_string)


def by_tensorrt(member: str) -> DType | None:
    """The row of a TensorRT DataType member name ('HALF', 'DataType.HALF', 'datatype.half')."""
    return _BY_TENSORRT.get(member.split(".")[-1].upper())


def normalized_name(text: str) -> str:
    """The package name of a dtype spelled the package's, ONNX's, TensorRT's or the short way
    ('half', 'DataType.BF16', 'double', 'fp16'); other spellings come back lower-cased."""
    name = str(text).lower().removeprefix("datatype.")
    row = _BY_ANY_NAME.get(name)
    return row.name if row is not None and row.name else name
