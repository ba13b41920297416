"""Makes the uint8 twin of the int8 CLIP model, for x86 CPUs without VNNI: its MatMulInteger weights
go from int8 to uint8 (each weight and its zero point shifted by 128, which leaves (w - zero point),
and so every product and sum, unchanged).

Why: ONNX Runtime multiplies uint8 activations by int8 weights with `vpmaddubsw` on CPUs without
VNNI (AVX2 machines such as many AMD EPYC hosts), which adds pairs of products in 16 bits and
saturates. On such a CPU the published model's embeddings are far from the exact ones (cosine about
0.5 on the reference images) and search quality drops. ONNX Runtime's uint8 x uint8 kernel there
lands at cosine 0.990-0.995 of the exact vectors. With VNNI the published weights are exact and
twice as fast as this twin, so lookalike loads the twin only where VNNI is missing
(lookalike_vision::model_file_for_this_cpu).

    python scripts/exact_int8.py SOURCE.onnx OUT.onnx      # needs onnx (scripts/pyenv.sh has it)
"""

import sys

import numpy as np
import onnx
from onnx import numpy_helper


def main(source: str, out: str) -> None:
    model = onnx.load(source)
    initializers = {i.name: i for i in model.graph.initializer}
    shifted = set()

    def shift(name: str) -> None:
        if name in shifted:  # a zero point may be shared by several nodes
            return
        values = numpy_helper.to_array(initializers[name])
        if values.dtype != np.int8:
            raise SystemExit(f"{name}: expected int8, found {values.dtype}")
        new = (values.astype(np.int16) + 128).astype(np.uint8)
        initializers[name].CopyFrom(numpy_helper.from_array(new, name))
        shifted.add(name)

    nodes = 0
    for node in model.graph.node:
        if node.op_type != "MatMulInteger":
            continue
        weight = node.input[1]
        zero_point = node.input[3] if len(node.input) > 3 else ""
        if weight not in initializers or zero_point not in initializers:
            raise SystemExit(f"{node.name}: weight and zero point must be initializers")
        shift(weight)
        shift(zero_point)
        nodes += 1
    if nodes == 0:
        raise SystemExit("no MatMulInteger node: not the expected model")
    onnx.save(model, out)
    print(f"exact_int8: {nodes} MatMulInteger nodes on uint8 weights -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:3])
