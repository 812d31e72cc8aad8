"""A TFLite flatbuffer's float graph as a pure JAX function: constants as arrays, operators replayed in order.

Covers the operators of MediaPipe's face-landmark network (CONV_2D, DEPTHWISE_CONV_2D, PRELU, ADD, MAX_POOL_2D,
PAD, LOGISTIC, RESHAPE, with float16 weights behind DEQUANTIZE); any other operator is a ValueError at load time.
The graph's batch size is free: every operator runs on (N, H, W, C) tensors whatever N the file declares.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from mediapipe.tasks.metadata import schema_py_generated as schema

_OPERATORS = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
_DTYPES = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
           schema.TensorType.INT32: np.int32, schema.TensorType.INT64: np.int64}
_ACTIVATIONS = {schema.ActivationFunctionType.NONE: lambda x: x,
                schema.ActivationFunctionType.RELU: jax.nn.relu,
                schema.ActivationFunctionType.RELU6: jax.nn.relu6}
_OPTIONS = {"CONV_2D": schema.Conv2DOptions, "DEPTHWISE_CONV_2D": schema.DepthwiseConv2DOptions,
            "MAX_POOL_2D": schema.Pool2DOptions, "ADD": schema.AddOptions}
_SHAPE_INPUTS = {"PAD": "paddings", "RESHAPE": "shape"}
SUPPORTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "PRELU", "ADD", "MAX_POOL_2D", "PAD", "LOGISTIC", "RESHAPE")


@dataclasses.dataclass(frozen=True)
class Operator:
    """One operator: its name, input and output tensor ids, and the options it runs with."""

    name: str
    inputs: tuple
    outputs: tuple
    options: tuple = ()


@dataclasses.dataclass(frozen=True)
class Graph:
    """A subgraph's structure (static, hashable); its constants travel separately as {str(tensor id): array}."""

    operators: tuple
    inputs: tuple
    outputs: tuple
    output_names: tuple


def _read_options(name, op):
    if name not in _OPTIONS:
        return ()
    table = op.BuiltinOptions()
    options = _OPTIONS[name]()
    options.Init(table.Bytes, table.Pos)
    activation = options.FusedActivationFunction()
    if activation not in _ACTIVATIONS:
        raise ValueError(f"{name}: fused activation {activation} is not supported")
    if name == "ADD":
        return (("activation", activation),)
    fields = [("padding", "SAME" if options.Padding() == schema.Padding.SAME else "VALID"),
              ("strides", (options.StrideH(), options.StrideW())), ("activation", activation)]
    if name == "MAX_POOL_2D":
        fields.append(("window", (options.FilterHeight(), options.FilterWidth())))
    else:
        fields.append(("dilation", (options.DilationHFactor(), options.DilationWFactor())))
    return tuple(fields)


def _nested_tuple(array):
    return tuple(_nested_tuple(row) for row in array) if array.ndim > 1 else tuple(int(v) for v in array)


def _constant(model, tensor):
    data, shape = model.Buffers(tensor.Buffer()).DataAsNumpy(), tensor.ShapeAsNumpy()
    if isinstance(data, int) or tensor.Type() not in _DTYPES:  # flatbuffers gives 0 for an empty vector
        return None
    return data.view(_DTYPES[tensor.Type()]).reshape(() if isinstance(shape, int) else tuple(shape))


def load_tflite(model_bytes):
    """Flatbuffer bytes -> (Graph, {str(tensor id): float32 numpy constant}); ValueError if unsupported.

    Integer constants (PAD's paddings, RESHAPE's shape) become static options of their operators.
    """
    if model_bytes[4:8] != b"TFL3":
        raise ValueError("not a TFLite model: its file identifier is not TFL3")
    model = schema.Model.GetRootAsModel(model_bytes, 0)
    subgraph = model.Subgraphs(0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    codes = [_OPERATORS.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "CUSTOM") for c in codes]
    constants, operators = {}, []
    for i in range(subgraph.TensorsLength()):
        value = _constant(model, subgraph.Tensors(i))
        if value is not None:
            constants[str(i)] = value.astype(np.float32) if value.dtype == np.float16 else value
    for i in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(i)
        name = codes[op.OpcodeIndex()]
        inputs, outputs = tuple(int(j) for j in op.InputsAsNumpy()), tuple(int(j) for j in op.OutputsAsNumpy())
        if name == "DEQUANTIZE" and str(inputs[0]) in constants:
            constants[str(outputs[0])] = constants.pop(str(inputs[0])).astype(np.float32)
            continue
        if name not in SUPPORTED:
            raise ValueError(f"TFLite operator {name} is not supported (supported: {', '.join(SUPPORTED)})")
        options = _read_options(name, op)
        if name in _SHAPE_INPUTS:  # the shape-valued second input becomes a static option
            options = ((_SHAPE_INPUTS[name], _nested_tuple(constants[str(inputs[1])])),)
            inputs = inputs[:1]
        operators.append(Operator(name, inputs, outputs, options))
    constants = {key: value for key, value in constants.items() if value.dtype == np.float32}
    names = tuple(subgraph.Tensors(j).Name().decode() for j in subgraph.OutputsAsNumpy())
    graph = Graph(tuple(operators), tuple(int(j) for j in subgraph.InputsAsNumpy()),
                  tuple(int(j) for j in subgraph.OutputsAsNumpy()), names)
    return graph, constants


def _conv(x, kernel, bias, options, groups):
    y = jax.lax.conv_general_dilated(x, kernel, options["strides"], options["padding"],
                                     rhs_dilation=options["dilation"], feature_group_count=groups,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return _ACTIVATIONS[options["activation"]](y + bias)


def _run_operator(op, args):
    options = dict(op.options)
    if op.name == "CONV_2D":  # filter (O, H, W, I)
        return _conv(args[0], jnp.transpose(args[1], (1, 2, 3, 0)), args[2], options, 1)
    if op.name == "DEPTHWISE_CONV_2D":  # filter (1, H, W, C * multiplier)
        return _conv(args[0], jnp.transpose(args[1], (1, 2, 0, 3)), args[2], options, args[0].shape[-1])
    if op.name == "PRELU":
        return jnp.where(args[0] >= 0, args[0], args[1] * args[0])
    if op.name == "ADD":
        return _ACTIVATIONS[options["activation"]](args[0] + args[1])
    if op.name == "MAX_POOL_2D":
        window = (1,) + options["window"] + (1,)
        pooled = jax.lax.reduce_window(args[0], -jnp.inf, jax.lax.max, window, (1,) + options["strides"] + (1,),
                                       options["padding"])
        return _ACTIVATIONS[options["activation"]](pooled)
    if op.name == "PAD":
        return jnp.pad(args[0], options["paddings"])
    if op.name == "LOGISTIC":
        return jax.nn.sigmoid(args[0])
    return args[0].reshape((args[0].shape[0],) + options["shape"][1:])  # RESHAPE keeps the caller's batch


def run_tflite(graph, constants, inputs, taps=()):
    """Replay `graph` on `inputs` (one array per graph input) -> ({output name: array}, [tapped tensors]).

    constants: as `load_tflite` returns them (numpy, jax or traced arrays); taps: tensor ids to return as well.
    """
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"the graph takes {len(graph.inputs)} inputs, got {len(inputs)}")
    values = dict(zip(graph.inputs, inputs))
    for op in graph.operators:
        args = [values[j] if j in values else constants[str(j)] for j in op.inputs if j >= 0]
        values[op.outputs[0]] = _run_operator(op, args)
    return dict(zip(graph.output_names, (values[j] for j in graph.outputs))), [values[j] for j in taps]
