// Seam: IEEE-754 conversions between binary floating-point formats, for the WebAssembly build
// of TVM's runtime. TVM's sources include "3rdparty/compiler-rt/builtin_fp16.h" and call the two
// templates below (float <-> half in sort.cc and builtin_fp16.cc); the header is not in any wheel.
//
// Template arguments: the value type, its same-width unsigned bit type, and its number of stored
// significand bits, first for the source format and then for the destination format.
// Narrowing rounds to nearest, ties to even (as IEEE-754 and numpy do); NaNs stay NaN (quiet bit
// set, top payload bits kept); overflow gives infinity. tests/test_fp16_header.py checks every
// half value and millions of float values bit-exactly against numpy.
#ifndef SEAM_BUILTIN_FP16_H_
#define SEAM_BUILTIN_FP16_H_

#include <cstdint>
#include <cstring>

namespace seam_fp {

template <typename REP, int SIG_BITS>
struct Format {
  static constexpr int kBits = static_cast<int>(sizeof(REP) * 8);
  static constexpr int kExpBits = kBits - SIG_BITS - 1;
  static constexpr int kInfExp = (1 << kExpBits) - 1;
  static constexpr int kBias = kInfExp >> 1;
  static constexpr REP kSigMask = (REP(1) << SIG_BITS) - 1;
  static constexpr REP kImplicitBit = REP(1) << SIG_BITS;
  static constexpr REP kQuietBit = REP(1) << (SIG_BITS - 1);
};

template <typename TO, typename FROM>
inline TO bit_cast(FROM v) {
  static_assert(sizeof(TO) == sizeof(FROM), "bit_cast needs equal sizes");
  TO out;
  std::memcpy(&out, &v, sizeof(out));
  return out;
}

// Shift `sig` right by `shift` bits, rounding to nearest with ties to even.
template <typename REP>
inline REP shift_right_round_even(REP sig, int shift) {
  if (shift <= 0) return sig;
  if (shift >= static_cast<int>(sizeof(REP) * 8)) return 0;
  REP kept = sig >> shift;
  REP rest = sig & ((REP(1) << shift) - 1);
  REP half = REP(1) << (shift - 1);
  if (rest > half || (rest == half && (kept & 1))) kept += 1;
  return kept;
}

}  // namespace seam_fp

// Narrowing conversion, e.g. float -> half: __truncXfYf2__<float, uint32_t, 23, uint16_t, uint16_t, 10>.
template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T,
          int DST_SIG_BITS>
static inline DST_T __truncXfYf2__(SRC_T a) {
  using Src = seam_fp::Format<SRC_REP_T, SRC_SIG_BITS>;
  using Dst = seam_fp::Format<DST_REP_T, DST_SIG_BITS>;
  const SRC_REP_T bits = seam_fp::bit_cast<SRC_REP_T>(a);
  const DST_REP_T sign = static_cast<DST_REP_T>(bits >> (Src::kBits - 1)) << (Dst::kBits - 1);
  const int exp = static_cast<int>((bits >> SRC_SIG_BITS) & SRC_REP_T(Src::kInfExp));
  const SRC_REP_T sig = bits & Src::kSigMask;
  const DST_REP_T dst_inf = DST_REP_T(Dst::kInfExp) << DST_SIG_BITS;
  DST_REP_T out;
  if (exp == Src::kInfExp) {
    out = dst_inf;
    if (sig != 0) {  // NaN: keep the top payload bits and make it quiet
      out |= Dst::kQuietBit | static_cast<DST_REP_T>(sig >> (SRC_SIG_BITS - DST_SIG_BITS));
    }
  } else if (exp == 0 && sig == 0) {
    out = 0;
  } else {
    // Source subnormals are far below the destination's range; they fall to the zero branch below.
    const int dst_exp = exp - Src::kBias + Dst::kBias;
    const SRC_REP_T full = exp == 0 ? sig : (sig | Src::kImplicitBit);
    if (dst_exp >= Dst::kInfExp) {
      out = dst_inf;
    } else if (dst_exp >= 1) {
      // A rounding carry may ripple into the exponent, and up to infinity: that is the right answer.
      SRC_REP_T rounded = seam_fp::shift_right_round_even(sig, SRC_SIG_BITS - DST_SIG_BITS);
      out = static_cast<DST_REP_T>((static_cast<SRC_REP_T>(dst_exp) << DST_SIG_BITS) + rounded);
    } else {
      // Destination subnormal: the exponent is pinned at its minimum and the significand shifts.
      int shift = SRC_SIG_BITS - DST_SIG_BITS + (1 - dst_exp);
      out = static_cast<DST_REP_T>(seam_fp::shift_right_round_even(full, shift));
    }
  }
  return seam_fp::bit_cast<DST_T>(static_cast<DST_REP_T>(out | sign));
}

// Widening conversion, e.g. half -> float: __extendXfYf2__<uint16_t, uint16_t, 10, float, uint32_t, 23>.
template <typename SRC_T, typename SRC_REP_T, int SRC_SIG_BITS, typename DST_T, typename DST_REP_T,
          int DST_SIG_BITS>
static inline DST_T __extendXfYf2__(SRC_T a) {
  using Src = seam_fp::Format<SRC_REP_T, SRC_SIG_BITS>;
  using Dst = seam_fp::Format<DST_REP_T, DST_SIG_BITS>;
  const SRC_REP_T bits = seam_fp::bit_cast<SRC_REP_T>(a);
  const DST_REP_T sign = static_cast<DST_REP_T>(bits >> (Src::kBits - 1)) << (Dst::kBits - 1);
  const int exp = static_cast<int>((bits >> SRC_SIG_BITS) & SRC_REP_T(Src::kInfExp));
  DST_REP_T sig = static_cast<DST_REP_T>(bits & Src::kSigMask) << (DST_SIG_BITS - SRC_SIG_BITS);
  DST_REP_T out;
  if (exp == Src::kInfExp) {
    out = (DST_REP_T(Dst::kInfExp) << DST_SIG_BITS) | sig;
  } else if (exp != 0) {
    out = (static_cast<DST_REP_T>(exp - Src::kBias + Dst::kBias) << DST_SIG_BITS) | sig;
  } else if (sig == 0) {
    out = 0;
  } else {
    // Source subnormal: normalise it, since every such value is a normal number in the wider format.
    int dst_exp = 1 - Src::kBias + Dst::kBias;
    while (!(sig & Dst::kImplicitBit)) {
      sig <<= 1;
      dst_exp -= 1;
    }
    out = (static_cast<DST_REP_T>(dst_exp) << DST_SIG_BITS) | (sig & Dst::kSigMask);
  }
  return seam_fp::bit_cast<DST_T>(static_cast<DST_REP_T>(out | sign));
}

#endif  // SEAM_BUILTIN_FP16_H_
