"""Make a model directory with no model hub: a locally trained tokenizer with a chat template,
and either a tiny Llama with random weights (`tiny-llama`) or only a real architecture's
config for `--load-format dummy` (`dummy-config`). Runs on the target with the vLLM venv's
Python (transformers and tokenizers come with vLLM). Usage: make_model.py KIND OUTDIR
"""
import json
import os
import random
import string
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import LlamaConfig, PreTrainedTokenizerFast  # noqa: E402

PORTABLE_TOKENIZER_CLASS = "PreTrainedTokenizerFast"   # the same name in provisioners/steps/model.py
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
# head_dim must be one the CPU attention backend supports (32, 64, 80, 96, ...): 128 / 4 = 32.
TINY = dict(vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
# Llama 3.2 1B shape (public architecture numbers), used with --load-format dummy.
LLAMA_32_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                   num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                   rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)


def tokenizer(out: str, vocab: int) -> None:
    rnd = random.Random(0)
    words = ["".join(rnd.choices(string.ascii_lowercase, k=rnd.randint(2, 9))) for _ in range(3000)]
    corpus = [" ".join(rnd.choices(words, k=12)) for _ in range(20000)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(vocab, 4096), special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                 pad_token="<pad>", chat_template=CHAT_TEMPLATE, model_max_length=2048)
    hf.save_pretrained(out)
    # transformers 5 names its own class ("TokenizersBackend"), which transformers 4 cannot import: vLLM 0.10.2
    # (transformers 4.56) then exits on a model dir a vLLM 0.26.0 venv made on the same host (seen on a GPU host).
    # The fast tokenizer's classic name loads on both (provisioners/steps/model.py checks it).
    path = os.path.join(out, "tokenizer_config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["tokenizer_class"] = PORTABLE_TOKENIZER_CLASS
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


def main(kind: str, out: str, overrides: str = "{}") -> None:
    """overrides: JSON of config keys over the kind's shape (a profile's model.architecture, e.g. the 3B shape)."""
    tmp = out.rstrip("/") + ".partial"
    os.makedirs(tmp, exist_ok=True)
    shape = {**(TINY if kind == "tiny-llama" else LLAMA_32_1B), **json.loads(overrides)}
    tokenizer(tmp, shape["vocab_size"])
    cfg = LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=3,
                      **({"tie_word_embeddings": False} if kind == "tiny-llama" else {}))
    if kind == "tiny-llama":
        import torch
        from transformers import LlamaForCausalLM

        torch.manual_seed(0)
        LlamaForCausalLM(cfg).save_pretrained(tmp)
    else:
        cfg.torch_dtype = "bfloat16"
        # what a checkpoint's own config says (save_pretrained of a model writes it; of a bare config it does not):
        # vLLM 0.10.2 resolves the model class from it alone ("No model architectures are specified")
        cfg.architectures = ["LlamaForCausalLM"]
        cfg.save_pretrained(tmp)
    with open(os.path.join(tmp, "phoenix_model.json"), "w") as f:
        json.dump({"kind": kind, "shape": shape, "note": "random or dummy weights, generated locally"}, f)
    if os.path.exists(out):
        import shutil
        shutil.rmtree(out)
    os.rename(tmp, out)  # appears complete or not at all
    print(json.dumps({"kind": kind, "path": out, "files": sorted(os.listdir(out))}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
