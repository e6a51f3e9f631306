// Seam: a no-op NVTX range for the WebAssembly build of TVM's runtime.
// The apache-tvm wheel's sources include this header, but the wheel does not ship it,
// and there is no NVTX profiler in a browser, so every range is empty.
#ifndef TVM_SUPPORT_CUDA_NVTX_H_
#define TVM_SUPPORT_CUDA_NVTX_H_

#include <string>

namespace tvm {
namespace support {

class NVTXScopedRange {
 public:
  explicit NVTXScopedRange(const char*) {}
  explicit NVTXScopedRange(const std::string&) {}
  NVTXScopedRange(const NVTXScopedRange&) = delete;
  NVTXScopedRange& operator=(const NVTXScopedRange&) = delete;
};

#define TVM_NVTX_FUNC_SCOPE()

}  // namespace support
}  // namespace tvm

#endif  // TVM_SUPPORT_CUDA_NVTX_H_
