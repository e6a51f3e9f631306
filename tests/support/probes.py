"""The page's probe reports (router/schemas), as the router tests send them to /api/route."""

# A probe report of a WebGPU device; a SwiftShader adapter, and a probe report of a client that measured its decode speed there.
PROBE = {"schema_version": 1, "webgpu": {"available": True, "features": [],
                                         "limits": {"maxStorageBufferBindingSize": 134217728, "maxBufferSize": 268435456}},
         "preference": "auto", "prompt_tokens": 12, "cached_models": [], "benchmark": {"bandwidth_gbps": 2.0}}

SWIFTSHADER = {"available": True, "features": [], "adapter": {"vendor": "google", "architecture": "swiftshader",
                                                              "is_fallback_adapter": True},
               "limits": {"maxStorageBufferBindingSize": 134217728, "maxBufferSize": 268435456}}


def measuring_probe(entry, client_id, decode):
    return {**PROBE, "webgpu": SWIFTSHADER, "client_id": client_id, "benchmark": {"bandwidth_gbps": 2.0},
            "cached_models": [{"id": entry["id"], "version": entry["version"]}],
            "measured": [{"id": entry["id"], "version": entry["version"], "kernels": "software",
                          "prefill_tokens_per_s": 4 * decode, "decode_tokens_per_s": decode}]}
