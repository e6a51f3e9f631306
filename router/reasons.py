"""The codes of a routing decision's reasons, all of them. router/schemas/route-decision.v1.json lists the
same codes, and the client package's index.d.ts (`ReasonCode`) these and the client's own: a test in
tests/router/test_routing.py checks that the three agree."""
from enum import StrEnum


class Reason(StrEnum):
    # Why this target: a decision's first reason.
    NO_MODEL = "no_model"                      # the catalog has no variant of the model asked for
    PREFERENCE_CLOUD = "preference_cloud"      # the user asked for the cloud
    PREFERENCE_LOCAL = "preference_local"      # the user asked for this device only, and it can run the model
    LOCAL_IMPOSSIBLE = "local_impossible"      # the user asked for this device only, and it cannot run the model
    BROWSER_CANNOT_RUN = "browser_cannot_run"  # no variant can run in this browser: the cloud answers, if there is one
    ONLY_BROWSER = "only_browser"              # there is no cloud engine, and the browser can run the model
    BROWSER_TOO_SLOW = "browser_too_slow"      # the browser is predicted under the policy's tokens/s floor
    UPDATE_AVAILABLE = "update_available"      # the browser holds an older version it must replace: the cloud answers
    NOT_DOWNLOADED = "not_downloaded"          # the browser does not hold the model yet: the cloud answers
    BATTERY_SAVER = "battery_saver"            # the device is saving battery: the cloud answers
    SERVER_BUSY = "server_busy"                # the cloud is full or its queue long: the cached browser answers
    CLOUD_FASTER = "cloud_faster"              # "fastest": the cloud is predicted to finish the answer sooner
    BROWSER_FASTER = "browser_faster"          # "fastest": the browser is predicted to finish the answer sooner
    COMPATIBLE_CACHED = "compatible_cached"    # the browser holds an older version the catalog marks compatible
    CACHED = "cached"                          # the browser holds the model (and is fast enough, or unmeasured)
    # Why not the browser (or the cloud): the other reasons, once per cause.
    NO_WEBGPU = "no_webgpu"                    # the browser has no usable WebGPU
    MISSING_FEATURE = "missing_feature"        # the GPU lacks a WebGPU feature the variant needs
    LIMIT_TOO_SMALL = "limit_too_small"        # the GPU's buffer limits are under the variant's
    LOW_MEMORY = "low_memory"                  # the device reports too little memory for the variant
    NO_CPU_BUILD = "no_cpu_build"              # the variant has no CPU build (wasm SIMD)
    NO_WASM_SIMD = "no_wasm_simd"              # the browser has no WebAssembly SIMD, which the CPU build needs
    WASM_HEAP_TOO_SMALL = "wasm_heap_too_small"  # the CPU build does not fit WebAssembly's 4 GB memory
    TOO_FEW_CORES = "too_few_cores"            # the device has too few cores for the CPU build and the page
    UNRELIABLE = "unreliable"                  # the variant failed on this device before
    NO_STORAGE = "no_storage"                  # too little storage quota is left for the download
    CONTEXT_TOO_LONG = "context_too_long"      # the prompt and max_tokens exceed the variant's context window
    CLOUD_UNAVAILABLE = "cloud_unavailable"    # the server has no cloud engine configured
