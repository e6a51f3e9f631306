"""Run in the bench's export venv (optimum-onnx needs transformers<4.58): a Hugging Face folder to the
layout transformers.js loads, `python onnx_export.py HF_FOLDER OUT_FOLDER`:

  OUT/config.json, generation_config.json, tokenizer.json, tokenizer_config.json
  OUT/onnx/model_q4.onnx   the decoder with its KV cache (text-generation-with-past), its MatMul
                           weights 4-bit (MatMulNBits, blocks of 32, symmetric): what transformers.js's
                           own conversion script makes for dtype "q4"
"""
import shutil
import sys
import tempfile
from pathlib import Path

COPIED = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json")


def main(hf: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    from optimum.exporters.onnx import main_export

    with tempfile.TemporaryDirectory() as tmp:
        main_export(str(hf), output=tmp, task="text-generation-with-past", local_files_only=True)
        quantizer = MatMulNBitsQuantizer(model=onnx.load(str(Path(tmp) / "model.onnx")), bits=4, block_size=32,
                                         is_symmetric=True, accuracy_level=None)
        quantizer.process()
        (out / "onnx").mkdir(parents=True, exist_ok=True)
        onnx.save(quantizer.model.model, str(out / "onnx" / "model_q4.onnx"))
    for name in COPIED:
        shutil.copy(hf / name, out / name)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
