// nnx/text.hpp — the text layer: tokenizers (tokenizer.json BPE, byte-level and byte-fallback;
// GPT-2's vocab.json + merges.txt) and incremental decoding for streaming.
#pragma once

#include "nnx/text/bpe.hpp"
#include "nnx/text/pretokenize.hpp"
#include "nnx/text/tokenizer.hpp"
#include "nnx/text/unicode.hpp"
