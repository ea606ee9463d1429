// Tests for nnx/kernels/gemm.hpp (and ref/, avx2/): both paths against a double-precision
// reference with the recursive-summation error bound, the AVX2 path against the portable
// one, leading dimensions and accumulate, and the property the inference engine relies on:
// a row of C is bitwise the same whether computed alone (M = 1) or in any batch.
#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "nnx/kernels/gemm.hpp"

#include "../support/numeric.hpp"
#include "../support/tier.hpp"

namespace {

namespace k = nnx::kernels;
using i64 = std::int64_t;
using test_support::kUnit;
using test_support::random_floats;

bool have_avx2() { return k::isa_supported(k::Isa::avx2); }

using GemmBtFn = void (*)(i64, i64, i64, const float*, i64, const float*, i64, float*, i64);

struct GemmPath {
  const char* name;
  k::GemmF32Fn gemm_split;
  GemmBtFn gemm_bt;
  void gemm(i64 M, i64 N, i64 K, const float* A, i64 lda, const float* B, i64 ldb, float* C, i64 ldc,
            bool accumulate) const {
    gemm_split(M, N, K, A, lda, B, ldb, C, ldc, accumulate, {});
  }
};

// Every tier this CPU runs, with the kernels it dispatches to (its own, or the tier's below
// where it has none); the dispatching entry points are checked against these at the end.
std::vector<GemmPath> gemm_paths() {
  std::vector<GemmPath> p;
  for (k::Isa isa : k::kAllIsas)
    if (k::isa_supported(isa))
      p.push_back({k::isa_name(isa).data(), k::select(k::kGemmF32, isa), k::select(k::kGemmF32Bt, isa)});
  return p;
}

// Largest |c - ref| / bound over C, where ref is the double-precision product (plus C0 when
// accumulating) and bound = (K + 2) u Σ_k |a_ik b_kj| (+ |C0|): recursive summation of K + 1
// terms in float is within γ_{K+1} of the exact sum, with or without FMA. <= 1 passes.
double gemm_error_ratio(i64 M, i64 N, i64 K, const std::vector<float>& A, i64 lda, const std::vector<float>& B, i64 ldb,
                        bool b_transposed, const std::vector<float>& C, i64 ldc, const std::vector<float>* C0) {
  double worst = 0.0;
  for (i64 i = 0; i < M; ++i) {
    for (i64 j = 0; j < N; ++j) {
      double exact = C0 ? (*C0)[static_cast<std::size_t>(i * ldc + j)] : 0.0;
      double mag = std::fabs(exact);
      for (i64 kk = 0; kk < K; ++kk) {
        const double a = A[static_cast<std::size_t>(i * lda + kk)];
        const double b =
            b_transposed ? B[static_cast<std::size_t>(j * ldb + kk)] : B[static_cast<std::size_t>(kk * ldb + j)];
        exact += a * b;
        mag += std::fabs(a * b);
      }
      const double bound = static_cast<double>(K + 2) * kUnit * mag + 1e-30;
      const double err = std::fabs(static_cast<double>(C[static_cast<std::size_t>(i * ldc + j)]) - exact);
      worst = std::max(worst, err / bound);
    }
  }
  return worst;
}

const i64 kOddSizes[] = {1, 3, 7, 17, 33, 65, 129};

}  // namespace

TEST_CASE("gemm_f32 matches a double reference at odd sizes on every path", "[kernels][gemm]") {
  for (const GemmPath& p : gemm_paths()) {
    for (i64 M : kOddSizes)
      for (i64 N : kOddSizes)
        for (i64 K : kOddSizes) {
          const auto A = random_floats(static_cast<std::size_t>(M * K), 1u + static_cast<std::uint32_t>(M * 7 + K));
          const auto B = random_floats(static_cast<std::size_t>(K * N), 2u + static_cast<std::uint32_t>(N * 13 + K));
          std::vector<float> C(static_cast<std::size_t>(M * N), 123.0f);
          p.gemm(M, N, K, A.data(), K, B.data(), N, C.data(), N, false);
          INFO(p.name << " M=" << M << " N=" << N << " K=" << K);
          REQUIRE(gemm_error_ratio(M, N, K, A, K, B, N, false, C, N, nullptr) <= 1.0);
        }
  }
}

TEST_CASE("gemm_f32 on every AVX2 path and block edge matches the reference", "[kernels][gemm]") {
  // The AVX2 kernel reads B in place in k panels (M < 16 or N < 8192), copies the panels
  // first when B's row stride is a multiple of 512 floats (M >= 3), and packs B for M >= 16
  // with N >= 8192 (K blocks of 256, N blocks of 1024, row blocks of 96). These sizes cross
  // each path's blocks with ragged edges.
  struct Case {
    i64 M, N, K;
  };
  for (const GemmPath& p : gemm_paths()) {
    for (Case c : {Case{17, 8200, 300}, Case{100, 8195, 20}, Case{15, 1030, 300}, Case{5, 1024, 129}, Case{20, 512, 77},
                   Case{2, 2048, 70}, Case{130, 37, 1}, Case{1, 9000, 65}}) {
      const auto A = random_floats(static_cast<std::size_t>(c.M * c.K), 11);
      const auto B = random_floats(static_cast<std::size_t>(c.K * c.N), 12);
      std::vector<float> C(static_cast<std::size_t>(c.M * c.N), -5.0f);
      p.gemm(c.M, c.N, c.K, A.data(), c.K, B.data(), c.N, C.data(), c.N, false);
      INFO(p.name << " M=" << c.M << " N=" << c.N << " K=" << c.K);
      REQUIRE(gemm_error_ratio(c.M, c.N, c.K, A, c.K, B, c.N, false, C, c.N, nullptr) <= 1.0);
    }
  }
}

TEST_CASE("gemm_f32 honours leading dimensions and accumulate, and leaves padding alone", "[kernels][gemm]") {
  for (const GemmPath& p : gemm_paths()) {
    for (i64 M : {1, 5, 20}) {
      const i64 N = 37, K = 29, lda = K + 3, ldb = N + 5, ldc = N + 7;
      const auto A = random_floats(static_cast<std::size_t>(M * lda), 21);
      const auto B = random_floats(static_cast<std::size_t>(K * ldb), 22);
      const auto C0 = random_floats(static_cast<std::size_t>(M * ldc), 23, -4.0f, 4.0f);
      std::vector<float> C = C0;
      p.gemm(M, N, K, A.data(), lda, B.data(), ldb, C.data(), ldc, true);
      INFO(p.name << " M=" << M);
      REQUIRE(gemm_error_ratio(M, N, K, A, lda, B, ldb, false, C, ldc, &C0) <= 1.0);
      for (i64 i = 0; i < M; ++i)
        for (i64 j = N; j < ldc; ++j)
          REQUIRE(C[static_cast<std::size_t>(i * ldc + j)] == C0[static_cast<std::size_t>(i * ldc + j)]);
      // Overwrite mode ignores C's old values entirely.
      std::vector<float> D(C0.size(), std::nanf(""));
      p.gemm(M, N, K, A.data(), lda, B.data(), ldb, D.data(), ldc, false);
      REQUIRE(gemm_error_ratio(M, N, K, A, lda, B, ldb, false, D, ldc, nullptr) <= 1.0);
    }
  }
}

TEST_CASE("gemm_f32 with an empty dimension", "[kernels][gemm]") {
  for (const GemmPath& p : gemm_paths()) {
    std::vector<float> C(6, 7.0f);
    const float a = 1.0f, b = 2.0f;
    p.gemm(2, 3, 0, &a, 0, &b, 3, C.data(), 3, true);
    CHECK(C == std::vector<float>(6, 7.0f));
    p.gemm(2, 3, 0, &a, 0, &b, 3, C.data(), 3, false);
    CHECK(C == std::vector<float>(6, 0.0f));
    p.gemm(0, 3, 4, &a, 4, &b, 3, C.data(), 3, false);
    p.gemm(2, 0, 4, &a, 4, &b, 0, C.data(), 3, false);
    CHECK(C == std::vector<float>(6, 0.0f));
    std::vector<float> D(6, 7.0f);
    p.gemm_bt(0, 3, 4, &a, 4, &b, 4, D.data(), 3);
    p.gemm_bt(2, 3, 0, &a, 0, &b, 0, D.data(), 3);
    CHECK(D == std::vector<float>(6, 0.0f));
  }
}

TEST_CASE("the AVX2 gemm_f32 agrees with the portable one", "[kernels][gemm][avx2]") {
#if NNX_KERNELS_X86_DISPATCH
  if (test_support::skip_tier("avx2", have_avx2())) return;
  for (i64 M : {1, 2, 3, 6, 7, 17, 33, 100})
    for (i64 N : {1, 7, 8, 9, 15, 16, 17, 31, 33, 65, 129})
      for (i64 K : {1, 7, 8, 17, 129, 257}) {
        const auto A = random_floats(static_cast<std::size_t>(M * K), 31u + static_cast<std::uint32_t>(M));
        const auto B = random_floats(static_cast<std::size_t>(K * N), 32u + static_cast<std::uint32_t>(N));
        std::vector<float> Cr(static_cast<std::size_t>(M * N)), Ca(Cr.size());
        k::ref::gemm_f32(M, N, K, A.data(), K, B.data(), N, Cr.data(), N);
        k::avx2::gemm_f32(M, N, K, A.data(), K, B.data(), N, Ca.data(), N);
        double worst = 0.0;
        for (i64 i = 0; i < M; ++i)
          for (i64 j = 0; j < N; ++j) {
            double mag = 0.0;
            for (i64 kk = 0; kk < K; ++kk)
              mag += std::fabs(static_cast<double>(A[static_cast<std::size_t>(i * K + kk)]) *
                               B[static_cast<std::size_t>(kk * N + j)]);
            // Both are within (K + 2) u Σ|ab| of the exact value, so within twice that of
            // each other.
            const double bound = 2.0 * static_cast<double>(K + 2) * kUnit * mag + 1e-30;
            const auto idx = static_cast<std::size_t>(i * N + j);
            worst = std::max(worst, std::fabs(static_cast<double>(Cr[idx]) - Ca[idx]) / bound);
          }
        INFO("M=" << M << " N=" << N << " K=" << K);
        REQUIRE(worst <= 1.0);
      }
#else
  test_support::skip_tier("avx2", false);  // not an x86-64 GCC/Clang build: no AVX2 path
#endif
}

TEST_CASE("a row of gemm_f32 is bitwise the same alone and in any batch", "[kernels][gemm][determinism]") {
  // The M values cross the AVX2 path choices (1 row, which reads B row by row when ldb == N,
  // 1-2 rows, >= 3 rows, >= 16 rows), the 6-row and 2-row tiles and the 96-row block; the
  // shapes select B read in place (1100), copied panels (1024) and packed B (8200, K > 256 for
  // two K blocks).
  struct Shape2 {
    i64 N, K;
    bool ref_too;  // the portable path has no size-dependent choices: one shape suffices
    std::vector<i64> Ms;
  };
  const std::vector<i64> all_Ms{1, 2, 3, 5, 6, 7, 8, 15, 16, 17, 64, 97, 128};
  for (const Shape2& s : {Shape2{1100, 300, true, all_Ms}, Shape2{1024, 70, false, all_Ms},
                          Shape2{8200, 260, false, {2, 15, 16, 17, 97, 128}}}) {
    const i64 N = s.N, K = s.K;
    const auto A = random_floats(static_cast<std::size_t>(128 * K), 41);
    const auto B = random_floats(static_cast<std::size_t>(K * N), 42);
    const auto C0 = random_floats(static_cast<std::size_t>(128 * N), 43);
    for (const GemmPath& p : gemm_paths()) {
      if (!s.ref_too && std::string(p.name) == "ref") continue;
      for (bool accumulate : {false, true}) {
        // Each row alone.
        std::vector<float> alone(static_cast<std::size_t>(128 * N));
        for (i64 r = 0; r < 128; ++r) {
          std::memcpy(alone.data() + r * N, C0.data() + r * N, static_cast<std::size_t>(N) * sizeof(float));
          p.gemm(1, N, K, A.data() + r * K, K, B.data(), N, alone.data() + r * N, N, accumulate);
        }
        for (i64 M : s.Ms) {
          // Batches [r0, r0 + M) at two offsets, so a row sits at different tile positions.
          for (i64 r0 : {i64{0}, (128 - M) / 2}) {
            std::vector<float> C(C0.begin() + r0 * N, C0.begin() + (r0 + M) * N);
            p.gemm(M, N, K, A.data() + r0 * K, K, B.data(), N, C.data(), N, accumulate);
            INFO(p.name << " N=" << N << " K=" << K << " M=" << M << " r0=" << r0 << " accumulate=" << accumulate);
            REQUIRE(std::memcmp(C.data(), alone.data() + r0 * N, C.size() * sizeof(float)) == 0);
          }
        }
      }
    }
  }
}

TEST_CASE("gemm_f32 called from several threads at once gives the single-thread bits", "[kernels][gemm][determinism]") {
  // Each thread has its own scratch buffers; the packed (20 x 8200), copied (7 x 1024) and
  // in-place (3 x 100) paths run concurrently.
  struct Case {
    i64 M, N, K;
  };
  const Case cases[] = {{20, 8200, 300}, {7, 1024, 70}, {3, 100, 33}};
  std::vector<std::vector<float>> A, B, expected;
  for (const Case& c : cases) {
    A.push_back(random_floats(static_cast<std::size_t>(c.M * c.K), 101));
    B.push_back(random_floats(static_cast<std::size_t>(c.K * c.N), 102));
    expected.emplace_back(static_cast<std::size_t>(c.M * c.N));
    k::gemm_f32(c.M, c.N, c.K, A.back().data(), c.K, B.back().data(), c.N, expected.back().data(), c.N);
  }
  std::vector<std::vector<float>> got(6);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      const std::size_t i = t % 3;
      const Case& c = cases[i];
      got[t].resize(expected[i].size());
      for (int rep = 0; rep < 3; ++rep)
        k::gemm_f32(c.M, c.N, c.K, A[i].data(), c.K, B[i].data(), c.N, got[t].data(), c.N);
    });
  for (auto& th : threads) th.join();
  for (std::size_t t = 0; t < 6; ++t) CHECK(got[t] == expected[t % 3]);
}

TEST_CASE("gemm_f32_bt matches a double reference at odd sizes on every path", "[kernels][gemm]") {
  for (const GemmPath& p : gemm_paths()) {
    for (i64 M : kOddSizes)
      for (i64 N : kOddSizes)
        for (i64 K : kOddSizes) {
          const auto A = random_floats(static_cast<std::size_t>(M * K), 51u + static_cast<std::uint32_t>(M * 7 + K));
          const auto B = random_floats(static_cast<std::size_t>(N * K), 52u + static_cast<std::uint32_t>(N * 13 + K));
          std::vector<float> C(static_cast<std::size_t>(M * N), 123.0f);
          p.gemm_bt(M, N, K, A.data(), K, B.data(), K, C.data(), N);
          INFO(p.name << " M=" << M << " N=" << N << " K=" << K);
          REQUIRE(gemm_error_ratio(M, N, K, A, K, B, K, true, C, N, nullptr) <= 1.0);
        }
  }
}

TEST_CASE("gemm_f32_bt honours leading dimensions", "[kernels][gemm]") {
  for (const GemmPath& p : gemm_paths()) {
    for (i64 M : {1, 3, 9}) {
      const i64 N = 19, K = 45, lda = K + 1, ldb = K + 3, ldc = N + 2;
      const auto A = random_floats(static_cast<std::size_t>(M * lda), 61);
      const auto B = random_floats(static_cast<std::size_t>(N * ldb), 62);
      std::vector<float> C(static_cast<std::size_t>(M * ldc), 9.0f);
      p.gemm_bt(M, N, K, A.data(), lda, B.data(), ldb, C.data(), ldc);
      INFO(p.name << " M=" << M);
      REQUIRE(gemm_error_ratio(M, N, K, A, lda, B, ldb, true, C, ldc, nullptr) <= 1.0);
      for (i64 i = 0; i < M; ++i)
        for (i64 j = N; j < ldc; ++j) REQUIRE(C[static_cast<std::size_t>(i * ldc + j)] == 9.0f);
    }
  }
}

TEST_CASE("a row of gemm_f32_bt is bitwise the same alone and in any batch", "[kernels][gemm][determinism]") {
  const i64 N = 203, K = 771;  // K % 8 != 0: the masked last lane group too
  const auto A = random_floats(static_cast<std::size_t>(64 * K), 71);
  const auto B = random_floats(static_cast<std::size_t>(N * K), 72);
  for (const GemmPath& p : gemm_paths()) {
    std::vector<float> alone(static_cast<std::size_t>(64 * N));
    for (i64 r = 0; r < 64; ++r) p.gemm_bt(1, N, K, A.data() + r * K, K, B.data(), K, alone.data() + r * N, N);
    for (i64 M : {1, 2, 3, 4, 5, 7, 8, 33, 64}) {
      for (i64 r0 : {i64{0}, (64 - M) / 2}) {
        std::vector<float> C(static_cast<std::size_t>(M * N));
        p.gemm_bt(M, N, K, A.data() + r0 * K, K, B.data(), K, C.data(), N);
        INFO(p.name << " M=" << M << " r0=" << r0);
        REQUIRE(std::memcmp(C.data(), alone.data() + r0 * N, C.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("the AVX2 gemm_f32_bt agrees with the portable one", "[kernels][gemm][avx2]") {
#if NNX_KERNELS_X86_DISPATCH
  if (test_support::skip_tier("avx2", have_avx2())) return;
  for (i64 M : {1, 3, 4, 5, 13})
    for (i64 N : {1, 2, 3, 7, 8, 9, 17, 50})
      for (i64 K : {1, 5, 8, 9, 16, 63, 769}) {
        const auto A = random_floats(static_cast<std::size_t>(M * K), 81u + static_cast<std::uint32_t>(K));
        const auto B = random_floats(static_cast<std::size_t>(N * K), 82u + static_cast<std::uint32_t>(N));
        std::vector<float> Cr(static_cast<std::size_t>(M * N)), Ca(Cr.size());
        k::ref::gemm_f32_bt(M, N, K, A.data(), K, B.data(), K, Cr.data(), N);
        k::avx2::gemm_f32_bt(M, N, K, A.data(), K, B.data(), K, Ca.data(), N);
        double worst = 0.0;
        for (i64 i = 0; i < M; ++i)
          for (i64 j = 0; j < N; ++j) {
            double mag = 0.0;
            for (i64 kk = 0; kk < K; ++kk)
              mag += std::fabs(static_cast<double>(A[static_cast<std::size_t>(i * K + kk)]) *
                               B[static_cast<std::size_t>(j * K + kk)]);
            const double bound = 2.0 * static_cast<double>(K + 2) * kUnit * mag + 1e-30;
            const auto idx = static_cast<std::size_t>(i * N + j);
            worst = std::max(worst, std::fabs(static_cast<double>(Cr[idx]) - Ca[idx]) / bound);
          }
        INFO("M=" << M << " N=" << N << " K=" << K);
        REQUIRE(worst <= 1.0);
      }
#else
  test_support::skip_tier("avx2", false);  // not an x86-64 GCC/Clang build: no AVX2 path
#endif
}

TEST_CASE("the dispatching entry points run the active ISA's kernel", "[kernels][gemm]") {
  CHECK(k::isa_name() == k::isa_name(k::active_isa()));
  struct Case {
    i64 M, N, K;
  };
  for (Case c : {Case{5, 23, 41}, Case{1, 3072, 20}, Case{20, 8200, 9}}) {
    const auto A = random_floats(static_cast<std::size_t>(c.M * c.K), 91);
    const auto B = random_floats(static_cast<std::size_t>(c.K * c.N), 92);
    std::vector<float> Cd(static_cast<std::size_t>(c.M * c.N)), Ce(Cd.size());
    const GemmPath p{"active", k::select(k::kGemmF32, k::active_isa()), k::select(k::kGemmF32Bt, k::active_isa())};
    k::gemm_f32(c.M, c.N, c.K, A.data(), c.K, B.data(), c.N, Cd.data(), c.N);
    p.gemm(c.M, c.N, c.K, A.data(), c.K, B.data(), c.N, Ce.data(), c.N, false);
    CHECK(std::memcmp(Cd.data(), Ce.data(), Cd.size() * sizeof(float)) == 0);
    // The same B buffer read as [N, K].
    k::gemm_f32_bt(c.M, c.N, c.K, A.data(), c.K, B.data(), c.K, Cd.data(), c.N);
    p.gemm_bt(c.M, c.N, c.K, A.data(), c.K, B.data(), c.K, Ce.data(), c.N);
    CHECK(std::memcmp(Cd.data(), Ce.data(), Cd.size() * sizeof(float)) == 0);
  }
}

TEST_CASE("the avx512 gemm_f32 gives avx2's bits at every shape", "[kernels][gemm][avx512]") {
  if (test_support::skip_tier("avx512", k::isa_supported(k::Isa::avx512))) return;
#if NNX_KERNELS_X86_DISPATCH
  struct Shape {
    i64 M, N, K;
  };
  // Decode and small batches (unpacked, 64- and 48-column tiles with partial last vectors),
  // prefill (packed 12 x 32 tiles over several K, N and M blocks), and strides above widths.
  for (Shape s : {Shape{1, 1, 1}, Shape{1, 77, 33}, Shape{1, 1100, 300}, Shape{2, 130, 257}, Shape{3, 47, 65},
                  Shape{8, 200, 300}, Shape{9, 65, 17}, Shape{16, 33, 9}, Shape{17, 801, 513}, Shape{37, 97, 300},
                  Shape{130, 70, 260}}) {
    // Dense strides too: one row over whole rows of B reads B as one stream (gemv_row_stream).
    for (bool dense : {false, true}) {
      const i64 lda = s.K + (dense ? 0 : 3), ldb = s.N + (dense ? 0 : 5), ldc = s.N + (dense ? 0 : 7);
      const auto A = random_floats(static_cast<std::size_t>(s.M * lda), 11);
      const auto B = random_floats(static_cast<std::size_t>(s.K * ldb), 12);
      const auto C0 = random_floats(static_cast<std::size_t>(s.M * ldc), 13);
      for (bool accumulate : {false, true}) {
        auto C2 = C0, C5 = C0;
        k::avx2::gemm_f32(s.M, s.N, s.K, A.data(), lda, B.data(), ldb, C2.data(), ldc, accumulate);
        k::avx512::gemm_f32(s.M, s.N, s.K, A.data(), lda, B.data(), ldb, C5.data(), ldc, accumulate);
        INFO("M=" << s.M << " N=" << s.N << " K=" << s.K << " dense=" << dense << " accumulate=" << accumulate);
        // Bitwise, padding between rows included (nothing past N is written).
        CHECK(std::memcmp(C2.data(), C5.data(), C2.size() * sizeof(float)) == 0);
      }
    }
  }
#endif
}

#if NNX_KERNELS_X86_DISPATCH
namespace {

// Which of the row stream and the tiles a row wider than L1 takes depends on the CPU's vendor
// (row_stream_max_columns), so both run here directly, with and without a K split.
using WideRowFn = void (*)(i64 N, i64 K, const float* a, const float* B, i64 ldb, float* c, bool accumulate,
                           const k::KSplit& split);

void check_wide_row_paths(WideRowFn stream, WideRowFn tiles) {
  for (auto [N, K] : {std::pair<i64, i64>{4099, 300}, {20011, 37}}) {
    const auto A = random_floats(static_cast<std::size_t>(K), 61);
    const auto B = random_floats(static_cast<std::size_t>(K * N), 62);
    const auto C0 = random_floats(static_cast<std::size_t>(N), 63);
    for (bool accumulate : {false, true})
      for (bool split : {false, true}) {
        INFO("N=" << N << " K=" << K << " accumulate=" << accumulate << " split=" << split);
        auto Cs = C0, Ct = C0;
        std::vector<float> second_s(static_cast<std::size_t>(N), NAN), second_t(second_s);
        stream(N, K, A.data(), B.data(), N, Cs.data(), accumulate,
               split ? k::KSplit{K / 2, second_s.data(), N} : k::KSplit{});
        tiles(N, K, A.data(), B.data(), N, Ct.data(), accumulate,
              split ? k::KSplit{K / 2, second_t.data(), N} : k::KSplit{});
        REQUIRE(std::memcmp(Cs.data(), Ct.data(), Cs.size() * sizeof(float)) == 0);
        if (split) REQUIRE(std::memcmp(second_s.data(), second_t.data(), second_s.size() * sizeof(float)) == 0);
      }
  }
}

}  // namespace
#endif

TEST_CASE("avx2: one row over rows wider than L1 gives the same bits as a stream and as tiles",
          "[kernels][gemm][avx2]") {
  if (test_support::skip_tier("avx2", have_avx2())) return;
#if NNX_KERNELS_X86_DISPATCH
  check_wide_row_paths(&k::avx2::detail::gemv_row_stream, [](i64 N, i64 K, const float* a, const float* B, i64 ldb,
                                                             float* c, bool acc, const k::KSplit& split) {
    k::avx2::detail::gemm_unpacked(1, N, K, a, K, B, ldb, c, N, acc, nullptr, split);
  });
#endif
}

TEST_CASE("avx512: one row over rows wider than L1 gives the same bits as a stream and as tiles",
          "[kernels][gemm][avx512]") {
  if (test_support::skip_tier("avx512", k::isa_supported(k::Isa::avx512))) return;
#if NNX_KERNELS_X86_DISPATCH
  check_wide_row_paths(&k::avx512::detail::gemv_row_stream, [](i64 N, i64 K, const float* a, const float* B, i64 ldb,
                                                               float* c, bool acc, const k::KSplit& split) {
    k::avx512::detail::gemm_unpacked(1, N, K, a, K, B, ldb, c, N, acc, split);
  });
#endif
}

TEST_CASE("gemm_f32_t with either operand transposed gives gemm_f32's bits on the transposed copies",
          "[kernels][gemm][train]") {
  // Transposes of A [M, K] and B [K, N] into buffers with padded rows.
  auto transpose = [](const std::vector<float>& x, i64 rows, i64 cols, i64 ld_out) {
    std::vector<float> t(static_cast<std::size_t>(cols * ld_out), NAN);
    for (i64 r = 0; r < rows; ++r)
      for (i64 c = 0; c < cols; ++c) t[static_cast<std::size_t>(c * ld_out + r)] = x[static_cast<std::size_t>(r * cols + c)];
    return t;
  };
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    const k::GemmF32Fn gemm = k::select(k::kGemmF32, isa);
    const k::GemmF32TFn gemm_t = k::select(k::kGemmF32T, isa);
    for (i64 M : {1, 5, 13, 40})
      for (i64 N : {1, 17, 33, 70})
        for (i64 K : {1, 7, 300})
          for (const bool accumulate : {false, true}) {
            CAPTURE(k::isa_name(isa), M, N, K, accumulate);
            const auto A = random_floats(static_cast<std::size_t>(M * K), 91u + static_cast<std::uint32_t>(M + K));
            const auto B = random_floats(static_cast<std::size_t>(K * N), 92u + static_cast<std::uint32_t>(N + K));
            const auto C0 = random_floats(static_cast<std::size_t>(M * N), 93);
            const auto At = transpose(A, M, K, M + 3), Bt = transpose(B, K, N, K + 2);
            auto expected = C0;
            gemm(M, N, K, A.data(), K, B.data(), N, expected.data(), N, accumulate, {});
            for (const bool ta : {false, true})
              for (const bool tb : {false, true}) {
                CAPTURE(ta, tb);
                auto c = C0;
                gemm_t(ta, tb, M, N, K, ta ? At.data() : A.data(), ta ? M + 3 : K, tb ? Bt.data() : B.data(),
                       tb ? K + 2 : N, c.data(), N, accumulate);
                REQUIRE(std::memcmp(c.data(), expected.data(), c.size() * sizeof(float)) == 0);
              }
          }
  }
  // The dispatching entry splits columns between threads without changing a bit.
  const i64 M = 37, N = 1000, K = 300;
  const auto A = random_floats(static_cast<std::size_t>(K * M), 94), B = random_floats(static_cast<std::size_t>(N * K), 95);
  const int threads = nnx::num_threads();
  std::vector<std::vector<float>> results;
  for (int t : {1, 2}) {
    k::set_thread_count(t);
    std::vector<float> c(static_cast<std::size_t>(M * N));
    k::gemm_f32_t(true, true, M, N, K, A.data(), M, B.data(), K, c.data(), N);
    results.push_back(c);
  }
  k::set_thread_count(threads);
  CHECK(results[0] == results[1]);
}

namespace {

// C (+)= A · B by two single-chain calls of a tier's kernel over K's halves [0, K0) and
// [K0, K), the second from zero, added after: what a split must give, bit for bit.
std::vector<float> two_half_products(k::GemmF32Fn gemm, i64 M, i64 N, i64 K, i64 K0, const std::vector<float>& A,
                                     i64 lda, const std::vector<float>& B, i64 ldb, std::vector<float> C, i64 ldc,
                                     bool accumulate) {
  std::vector<float> second(static_cast<std::size_t>(M * N));
  gemm(M, N, K0, A.data(), lda, B.data(), ldb, C.data(), ldc, accumulate, {});
  gemm(M, N, K - K0, A.data() + K0, lda, B.data() + K0 * ldb, ldb, second.data(), N, false, {});
  for (i64 i = 0; i < M; ++i)
    for (i64 j = 0; j < N; ++j)
      C[static_cast<std::size_t>(i * ldc + j)] += second[static_cast<std::size_t>(i * N + j)];
  return C;
}

}  // namespace

TEST_CASE("each tier's one-pass K split gives the bits of its two half products, at any M",
          "[kernels][gemm][determinism]") {
  // One row over whole rows of B (row stream, M = 1, ldb == N), decode tiles (M <= 2 with
  // ldb > N, or N > 4096 where wide rows take tiles), small-batch panels (M 3..15: even panels
  // per half), copied panels (avx2, ldb a multiple of 512) and packed B (M >= 16); odd K gives
  // unequal halves.
  struct Shape {
    i64 N, K, ldb_pad;
    std::vector<i64> Ms;
  };
  for (const Shape& s : {Shape{1100, 600, 0, {1, 2, 3, 8, 15, 16, 17, 40}}, Shape{1024, 520, 0, {3, 8, 12}},
                         Shape{5000, 300, 0, {1, 2}}, Shape{77, 257, 5, {1, 3, 9}}, Shape{40, 1001, 0, {1, 7}}}) {
    const i64 N = s.N, K = s.K, ldb = N + s.ldb_pad, K0 = K / 2;
    const auto A = random_floats(static_cast<std::size_t>(40 * K), 51);
    const auto B = random_floats(static_cast<std::size_t>(K * ldb), 52);
    for (const GemmPath& p : gemm_paths())
      for (const i64 M : s.Ms)
        for (const bool accumulate : {false, true}) {
          INFO(p.name << " M=" << M << " N=" << N << " K=" << K << " ldb=" << ldb << " accumulate=" << accumulate);
          const auto C0 = random_floats(static_cast<std::size_t>(M * N), 53);
          const auto expected = two_half_products(p.gemm_split, M, N, K, K0, A, K, B, ldb, C0, N, accumulate);
          auto C = C0;
          std::vector<float> second(static_cast<std::size_t>(M * N), NAN);  // every element is written
          p.gemm_split(M, N, K, A.data(), K, B.data(), ldb, C.data(), N, accumulate, {K0, second.data(), N});
          for (std::size_t i = 0; i < C.size(); ++i) C[i] += second[i];
          REQUIRE(std::memcmp(C.data(), expected.data(), C.size() * sizeof(float)) == 0);
        }
  }
}

TEST_CASE("gemm_f32 halves K from kSplitDepth on: a row's bits alone, in any batch, on any thread count",
          "[kernels][gemm][determinism]") {
  // Against the active tier's two half products; the 1000 x 4300 product's runs of columns
  // hold more rows than a thread's partial-product buffer, so each goes in pieces of rows.
  const k::GemmF32Fn gemm = k::select(k::kGemmF32, k::active_isa());
  const int threads_before = nnx::num_threads();
  const i64 min_work_before = k::parallel_min_work();
  struct Shape {
    i64 N, K;
    std::vector<i64> Ms;
  };
  for (const Shape& s : {Shape{1100, 600, {1, 2, 3, 8, 17, 40}}, Shape{300, k::kSplitDepth, {1, 5}},
                         Shape{300, k::kSplitDepth - 1, {1, 5}}, Shape{4300, 256, {1000}}}) {
    const i64 N = s.N, K = s.K, M_max = *std::max_element(s.Ms.begin(), s.Ms.end());
    const i64 K0 = K >= k::kSplitDepth ? K / 2 : 0;
    const auto A = random_floats(static_cast<std::size_t>(M_max * K), 61);
    const auto B = random_floats(static_cast<std::size_t>(K * N), 62);
    for (const bool accumulate : {false, true}) {
      const auto C0 = random_floats(static_cast<std::size_t>(M_max * N), 63);
      auto expected = C0;
      if (K0 > 0)
        expected = two_half_products(gemm, M_max, N, K, K0, A, K, B, N, C0, N, accumulate);
      else
        gemm(M_max, N, K, A.data(), K, B.data(), N, expected.data(), N, accumulate, {});
      for (const int threads : {1, 2})
        for (const i64 M : s.Ms)
          for (const i64 r0 : {i64{0}, M_max - M}) {
            INFO("N=" << N << " K=" << K << " M=" << M << " rows from " << r0 << " threads=" << threads
                      << " accumulate=" << accumulate);
            k::set_thread_count(threads);
            k::set_parallel_min_work(threads == 1 ? min_work_before : 1);
            std::vector<float> C(C0.begin() + r0 * N, C0.begin() + (r0 + M) * N);
            k::gemm_f32(M, N, K, A.data() + r0 * K, K, B.data(), N, C.data(), N, accumulate);
            REQUIRE(std::memcmp(C.data(), expected.data() + r0 * N, C.size() * sizeof(float)) == 0);
          }
    }
  }
  k::set_thread_count(threads_before);
  k::set_parallel_min_work(min_work_before);
}

TEST_CASE("gemm_f32_t gives gemm_f32's bits when K is halved, on any thread count", "[kernels][gemm][train]") {
  const int threads_before = nnx::num_threads();
  for (const i64 M : {1, 5, 40})
    for (const i64 N : {17, 300})
      for (const i64 K : {k::kSplitDepth, i64{601}}) {
        const auto A = random_floats(static_cast<std::size_t>(M * K), 71);
        const auto B = random_floats(static_cast<std::size_t>(K * N), 72);
        std::vector<float> At(A.size()), Bt(B.size());
        for (i64 i = 0; i < M; ++i)
          for (i64 kk = 0; kk < K; ++kk)
            At[static_cast<std::size_t>(kk * M + i)] = A[static_cast<std::size_t>(i * K + kk)];
        for (i64 kk = 0; kk < K; ++kk)
          for (i64 j = 0; j < N; ++j)
            Bt[static_cast<std::size_t>(j * K + kk)] = B[static_cast<std::size_t>(kk * N + j)];
        std::vector<float> expected(static_cast<std::size_t>(M * N));
        k::set_thread_count(1);
        k::gemm_f32(M, N, K, A.data(), K, B.data(), N, expected.data(), N);
        for (const int threads : {1, 2}) {
          k::set_thread_count(threads);
          for (const bool ta : {false, true})
            for (const bool tb : {false, true}) {
              INFO("M=" << M << " N=" << N << " K=" << K << " threads=" << threads << " ta=" << ta << " tb=" << tb);
              std::vector<float> c(expected.size());
              k::gemm_f32_t(ta, tb, M, N, K, ta ? At.data() : A.data(), ta ? M : K, tb ? Bt.data() : B.data(),
                            tb ? K : N, c.data(), N);
              REQUIRE(std::memcmp(c.data(), expected.data(), c.size() * sizeof(float)) == 0);
            }
        }
      }
  k::set_thread_count(threads_before);
}
