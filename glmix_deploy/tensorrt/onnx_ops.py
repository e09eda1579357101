"""What the onnx-tensorrt parser (inside TensorRT and trtexec) imports: its operator support matrix,
the per-op limits the checks in preflight.py apply, and the data types TensorRT has.

Source of the operator table: onnx-tensorrt `docs/operators.md` ("Supported ONNX Operators",
TensorRT 10.15: opset 9 to 24), https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md,
and the data-type notes at its top. Data types here are TensorProto names (FLOAT, FLOAT16, ...), as
TensorRT's and ONNX's documentation spell them in the messages users read.
"""

from __future__ import annotations

from glmix_deploy import dtypes

DEFAULT_DOMAINS = ("", "ai.onnx")
OPSET_MIN, OPSET_MAX = 9, 24  # "TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24"
TABLE_SOURCE = "onnx-tensorrt docs/operators.md (TensorRT 10.15)"

# Default-domain ops the parser imports ("Y" rows of the support matrix).
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish
Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike
Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign
RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid
Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# Ops the table lists that older TensorRT releases we still meet cannot import: the first release that can.
# `Attention` (opset 23) maps to TensorRT's fused attention layer (IAttention), added in 10.14.
OP_MIN_TENSORRT = {"Attention": "10.14"}

# "N" rows: listed by the table as not supported.
UNSUPPORTED_OPS = frozenset("""
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor CenterCropPad Col2Im Compress
ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear ImageDecoder MatMulInteger MaxRoiPool
MaxUnpool MelWeightMatrix Multinomial NegativeLogLikelihoodLoss Optional OptionalGetElement
OptionalHasElement QLinearConv QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty
SequenceErase SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence
StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
""".split())

# Ops whose output shape depends on tensor *values*: TensorRT builds them (data-dependent shapes),
# but they defeat shape inference and often run slower. Warnings.
DATA_DEPENDENT_OPS = frozenset({"NonZero", "NonMaxSuppression"})
# Inputs that decide an output shape: fine when they come from shapes or constants.
SHAPE_INPUTS = {"Range": (0, 1, 2), "Expand": (1,), "Reshape": (1,), "ConstantOfShape": (0,), "Tile": (1,),
                "Slice": (1, 2, 3, 4), "Pad": (1,), "Resize": (2, 3), "OneHot": (1,)}
# Ops that keep "computed from shapes/constants only" (shape arithmetic the exporters emit).
SHAPE_PASSTHROUGH_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Mod", "Neg", "Abs", "Max", "Min", "Floor", "Ceil", "Cast", "Concat",
    "Gather", "Slice", "Squeeze", "Unsqueeze", "Reshape", "Identity", "Equal", "Less", "Greater",
    "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "Where", "ReduceProd", "ReduceSum",
    "ReduceMax", "ReduceMin", "Range", "ConstantOfShape", "Expand", "Sqrt", "Pow", "Clip", "Sign",
    "Round", "Flatten", "Tile", "CumSum"})

# TensorProto data types (names: glmix_deploy.dtypes). TensorRT: FLOAT, FLOAT16, BFLOAT16, INT32, INT64, BOOL;
# UINT8 as network
# I/O only; INT8/INT4/FP8(E4M3FN)/FP4(E2M1) as quantized types; DOUBLE initializers are cast down.
SUPPORTED_DTYPES = frozenset({"FLOAT", "FLOAT16", "BFLOAT16", "INT32", "INT64", "BOOL", "UINT8", "INT8",
                              "INT4", "FLOAT8E4M3FN", "FLOAT4E2M1"})
QUANTIZED_DTYPES = frozenset({"INT8", "INT4", "FLOAT8E4M3FN", "FLOAT4E2M1"})
DOUBLE = "DOUBLE"

# Per-op limits from the table's notes column: reductions need constant axes; Resize supports these
# modes only; TopK's K must stay below 3840.
REDUCE_OPS = frozenset({"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
                        "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare"})
RESIZE_COORDINATE_MODES = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
RESIZE_MODES = {"nearest", "linear"}
RESIZE_NEAREST_MODES = {"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"}
TOPK_MAX_K = 3840


def dtype_name(elem_type: int) -> str:
    """The TensorProto name of an element type ('FLOAT', 'FLOAT8E4M3FN', ...)."""
    row = dtypes.by_onnx(elem_type)
    return row.onnx_name if row is not None else f"type {elem_type}"


# The GPUs TensorRT builds each quantized type for (compute capability, in words).
QUANTIZED_TYPE_GPUS: dict[str, tuple[str, str]] = {
    "FLOAT8E4M3FN": ("8.9", "Ada, Hopper and Blackwell GPUs (compute capability 8.9 or newer)"),
    "FLOAT4E2M1": ("10.0", "Blackwell GPUs (compute capability 10.0 or newer)"),
}


def quantized_types(model) -> list[str]:
    """The low-precision types of a graph's Q/DQ pairs ('INT8', 'FLOAT8E4M3FN', ...): the dtype a
    DequantizeLinear reads (an initializer, or a QuantizeLinear's output type or zero point)."""
    values = {i.name: i.data_type for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = node.attribute[0].t.data_type
    found = set()
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear":
            declared = next((a.i for a in node.attribute if a.name == "output_dtype" and a.i), None)
            zero_point = values.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            found.add(dtype_name(declared or zero_point or 2))  # no zero point: uint8, as ONNX says
        elif node.op_type == "DequantizeLinear" and node.input[0] in values:
            found.add(dtype_name(values[node.input[0]]))
    return sorted(found)
