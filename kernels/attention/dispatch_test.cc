#include "kernels/attention/dispatch.h"

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "gtest/gtest.h"

namespace peng::kernels {
namespace {

AttentionVariant SmolLm2Decode() {
  return {AttentionBackend::kCpu, AttentionPhase::kDecode, KvFormat::kF16, 64, 3,
          ScoreMod::kScale, MaskMod::kCausal, Reduction::kSoftmax};
}

TEST(AttentionDispatchTest, FindsTheDefaultModelsVariantsOnEveryIsaThisCpuRuns) {
  for (AttentionPhase phase : {AttentionPhase::kPrefill, AttentionPhase::kDecode}) {
    AttentionVariant v = SmolLm2Decode();
    v.phase = phase;
    const CpuAttentionKernel* k = FindCpuAttention(v);
    ASSERT_NE(k, nullptr) << NotBuiltMessage(v);
    EXPECT_EQ(k->isa, BestCpuIsa());
    EXPECT_EQ(phase == AttentionPhase::kDecode, k->decode != nullptr && k->combine != nullptr);
    EXPECT_EQ(phase == AttentionPhase::kPrefill, k->prefill != nullptr);
  }
}

TEST(AttentionDispatchTest, AVariantThatWasNotBuiltIsNamedNotReplaced) {
  AttentionVariant v = SmolLm2Decode();
  v.head_dim = 96;
  EXPECT_EQ(FindCpuAttention(v), nullptr);
  EXPECT_EQ(NotBuiltMessage(v),
            "attention variant not built: backend=cpu phase=decode kv_format=f16 head_dim=96 group=3 "
            "score_mod=scale mask_mod=causal reduction=softmax (add it to kernels/gen/spec.yaml or "
            "configure with -DPENG_ATTENTION_VARIANTS=all)");
  v = SmolLm2Decode();
  v.backend = AttentionBackend::kCuda;
  EXPECT_EQ(FindCpuAttention(v), nullptr);  // backends never stand in for each other
}

TEST(AttentionDispatchTest, ManifestListsExactlyTheBuiltVariants) {
  std::ifstream in(PENG_GEN_MANIFEST);
  ASSERT_TRUE(in) << "missing " << PENG_GEN_MANIFEST;
  std::stringstream text;
  text << in.rdbuf();
  const std::string manifest = text.str();
  std::set<std::string> symbols;
  for (const CpuAttentionKernel& k : CpuAttentionKernels()) {
    std::string s = k.symbol;
    s = s.substr(0, s.rfind('_'));  // drop the ISA suffix
    symbols.insert(s);
    EXPECT_NE(manifest.find("\"symbol\": \"" + s + "\""), std::string::npos) << s;
  }
  for (const CudaAttentionKernel& k : CudaAttentionKernels()) {
    symbols.insert(k.symbol);
    EXPECT_NE(manifest.find("\"symbol\": \"" + std::string(k.symbol) + "\""), std::string::npos) << k.symbol;
  }
  size_t entries = 0;
  for (size_t pos = 0; (pos = manifest.find("\"symbol\"", pos)) != std::string::npos; ++pos) ++entries;
  EXPECT_EQ(entries, symbols.size());
}

}  // namespace
}  // namespace peng::kernels
