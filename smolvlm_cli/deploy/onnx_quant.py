# The quantised variants of the ONNX export, named like the released SmolVLM onnx/ folders: *_int8.onnx
# (onnxruntime dynamic int8: MatMulInteger) and *_q4.onnx (onnxruntime's MatMulNBits 4-bit weights, when installed).
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

Q4_BLOCK = 32  # weights per 4-bit scale; the hidden sizes of every SmolVLM (64 .. 960) divide by it


def quant_ops(path: Path) -> set[str]:
    """The quantised operators a graph holds: empty means the quantiser found nothing to do."""
    import onnx

    kinds = {"MatMulInteger", "DynamicQuantizeLinear", "MatMulNBits", "GatherBlockQuantized", "DequantizeLinear"}
    return {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node} & kinds


def write_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)


@contextlib.contextmanager
def quiet_root_logger():
    """The quantisers log through the root logger (logging.info / logging.warning, and basicConfig(level=INFO) on
    import), which would print every skipped node: hush it while they run and put it back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    root.handlers[:] = [logging.NullHandler()]
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def q4_quantizer():
    """onnxruntime's MatMulNBits quantiser, or None where the installed onnxruntime predates it."""
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError:
        return None
    return MatMulNBitsQuantizer


def write_q4(quantizer, src: Path, dst: Path) -> None:
    """4-bit symmetric blocks on every MatMul weight and on the embedding table (Gather along the hidden axis)."""
    import onnx

    q = quantizer(onnx.load(str(src)), bits=4, block_size=Q4_BLOCK, is_symmetric=True,
                  op_types_to_quantize=("MatMul", "Gather"), quant_axes=(("MatMul", 0), ("Gather", 1)))
    q.process()
    q.model.save_model_to_file(str(dst), use_external_data_format=False)


def quantize_all(onnx_dir: Path, graphs: tuple[str, ...]) -> list[str]:
    """Write each of `graphs`' int8 (and q4) variant next to it; returns the suffixes written. A variant whose graph
    came out without a quantised operator is an error, not a silent fp32 copy."""
    with quiet_root_logger():
        quantizer = q4_quantizer()
        variants = ["int8"] + (["q4"] if quantizer is not None else [])
        for graph in graphs:
            _quantize_graph(onnx_dir, graph, variants, quantizer)
    return variants


def _quantize_graph(onnx_dir: Path, graph: str, variants: list[str], quantizer) -> None:
    src = onnx_dir / f"{graph}.onnx"
    for variant in variants:
        dst = onnx_dir / f"{graph}_{variant}.onnx"
        if variant == "int8":
            write_int8(src, dst)
        else:
            write_q4(quantizer, src, dst)
        if not quant_ops(dst):
            raise RuntimeError(f"{dst.name}: the {variant} quantiser left no quantised operator in the graph")
