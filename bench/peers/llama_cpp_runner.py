"""One measurement of llama.cpp (llama-cpp-python) on the CPU, run in the bench's llama.cpp venv:
`python llama_cpp_runner.py MODEL.gguf REQUEST_JSON` prints a JSON result (REQUEST_JSON may name `threads`).

The request is the bench workload's: chat messages, max_tokens, greedy. The chat template is the GGUF's
own (llama.cpp applies it), so the prompt tokens are the ones Seam's engines see. Prefill and decode are
timed around explicit synchronizations: llama.cpp's own counters count unsynchronized single-token
evaluations as prefill.
"""
import json
import os
import sys
import time


def main(gguf: str, request: dict) -> dict:
    import llama_cpp
    from llama_cpp import Llama

    started = time.perf_counter()
    threads = request.get("threads") or os.cpu_count()
    llm = Llama(model_path=gguf, n_ctx=4096, n_batch=512, n_threads=threads, n_threads_batch=threads, verbose=False)
    load_s = time.perf_counter() - started
    formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"], eos_token="", bos_token="")
    prompt = formatter(messages=request["messages"]).prompt
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    ctx = llm._ctx.ctx
    llm.reset()
    first = time.perf_counter()
    llm.eval(tokens)
    llama_cpp.llama_synchronize(ctx)
    token = llm.sample(top_k=1, temp=0.0)
    prefilled = time.perf_counter()
    generated = [token]
    while len(generated) < request["max_tokens"]:
        llm.eval([token])
        token = llm.sample(top_k=1, temp=0.0)  # reads the logits, so it waits for the evaluation
        generated.append(token)
    ended = time.perf_counter()
    return {"load_s": load_s, "prompt_tokens": len(tokens), "completion_tokens": len(generated),
            "ttft_s": prefilled - first, "prefill_tokens_per_s": len(tokens) / (prefilled - first),
            "decode_tokens_per_s": (len(generated) - 1) / (ended - prefilled),
            "text": llm.detokenize(generated).decode(errors="replace")}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], json.loads(sys.argv[2]))))
