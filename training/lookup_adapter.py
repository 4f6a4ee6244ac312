"""Train the fact lookup's adapter for one sentence encoder, on invented NPCs (never the shipped ones).

The published encoders were trained on web questions and answers; a player's "My mare won't swim it.
How much to bring her aboard?" is far from "Carrying a horse costs 1 silver." for them. This trains a
low-rank adapter (npcserver/backends/lora.py) so that a player's line lands on the fact that answers it,
among the same NPC's other facts: for each NPC, every line against every index line of that NPC
(built by the server's own `index_lines` and `query_text`), a contrastive loss with the answering
fact's lines as the positives. 8 of the 40 NPCs in training/lookup_npcs/ are held out and their
top-1 accuracy printed, before and after each epoch.

    python -m training.lookup_adapter --base all-minilm-l6-v2     # ~2 min on 2 cores
    python -m training.lookup_adapter --base all-mpnet-base-v2    # ~6 min

It writes npcserver/backends/lookup_adapters/<base>-npc.npz; `npcserver prepare` merges it into the
encoder named <base>-npc. Measure a new adapter with `python -m loadtest.dialogue --lookup-only`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from npcserver.backends.fake import FakeEmbedder
from npcserver.backends.lora import ADAPTERS, add_adapters, save_adapters
from npcserver.backends.sentence_embedders import MAX_TOKENS, mean_of_tokens
from npcserver.config import Settings
from npcserver.conversation.knowledge import KnowledgeIndex, index_lines
from npcserver.models import prepare_knowledge_models, resolve_knowledge_models
from npcserver.personas.store import PersonaStore

DATA = Path(__file__).parent / "lookup_npcs"
HELD_OUT = 8  # NPCs
SCALE = 20.0  # cosine -> logit, as sentence-transformers' MultipleNegativesRankingLoss


@dataclass(frozen=True)
class NpcLines:
    name: str
    index: list[str]  # what the index embeds for the NPC's facts
    owners: list[int]  # the fact of each index line
    lines: list[tuple[str, int]]  # a player's line as the lookup embeds it, and the fact that answers it


def read_npcs(folder: Path) -> list[NpcLines]:
    """The invented NPCs, each as a persona (the shipped Greta's settings, their own name, role and facts)."""
    template = PersonaStore(Settings().voices).get("greta_blacksmith")
    assert template is not None, "the shipped personas are needed as a template"
    npcs = []
    for path in sorted(folder.glob("*.json")):
        for npc in json.loads(path.read_text(encoding="utf-8")):
            persona = dataclasses.replace(template, id=npc["name"].lower(), name=npc["name"], role=npc["role"],
                                          facts=tuple(npc["facts"]), forbidden_topics=(), example_lines=(),
                                          actions=(), tests=())
            index = index_lines(persona)
            words_only = KnowledgeIndex(persona, FakeEmbedder())  # for query_text: the line as the lookup embeds it
            npcs.append(NpcLines(npc["name"], [line.embedded for line in index], [line.fact for line in index],
                                 [(words_only.query_text(line["player"]), line["fact"] - 1) for line in npc["lines"]]))
    return npcs


class Trainer:
    def __init__(self, folder: Path, rank: int, alpha: float) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        self.adapters = add_adapters(self.model, rank, alpha)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [parameter for adapter in self.adapters.values() for parameter in (adapter.a, adapter.b)]

    def embed(self, texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        return mean_of_tokens(self.model(**batch).last_hidden_state, batch["attention_mask"])

    def logits(self, npc: NpcLines) -> torch.Tensor:
        vectors = self.embed(npc.index + [line for line, _ in npc.lines])
        return SCALE * vectors[len(npc.index):] @ vectors[: len(npc.index)].T

    def loss(self, npc: NpcLines) -> torch.Tensor:
        """-log of the answering fact's share of the softmax over the NPC's index lines, per line."""
        logits = self.logits(npc)
        owners = torch.tensor(npc.owners)
        answers = torch.stack([owners == fact for _, fact in npc.lines])
        return -(torch.logsumexp(logits.masked_fill(~answers, -1e9), 1) - torch.logsumexp(logits, 1)).mean()

    def top1(self, npcs: list[NpcLines]) -> float:
        right = total = 0
        with torch.no_grad():
            for npc in npcs:
                best = self.logits(npc).argmax(1).numpy()
                right += sum(npc.owners[row] == fact for row, (_, fact) in zip(best, npc.lines, strict=True))
                total += len(npc.lines)
        return right / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", choices=["all-minilm-l6-v2", "all-mpnet-base-v2"], required=True)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--epochs", type=int, default=None, help="default 4 for MiniLM, 3 for MPNet")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="default npcserver/backends/lookup_adapters/<base>-npc.npz")
    args = parser.parse_args()
    epochs = args.epochs if args.epochs is not None else (4 if args.base == "all-minilm-l6-v2" else 3)
    out = args.out or ADAPTERS / f"{args.base}-npc.npz"

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    npcs = read_npcs(DATA)
    random.Random(args.seed).shuffle(npcs)
    held_out, train = npcs[:HELD_OUT], npcs[HELD_OUT:]
    print(f"{len(train)} NPCs to train on ({sum(len(n.lines) for n in train)} lines), {len(held_out)} held out "
          f"({sum(len(n.lines) for n in held_out)} lines)")
    settings = Settings(knowledge_model=args.base)
    prepare_knowledge_models(settings)
    trainer = Trainer(resolve_knowledge_models(args.base, settings.cache_dir)[0], args.rank, args.alpha)
    trainer.model.eval()
    print(f"before: held-out top-1 {trainer.top1(held_out):.3f}")
    optimiser = torch.optim.AdamW(trainer.parameters(), lr=args.lr, weight_decay=0.01)
    for epoch in range(1, epochs + 1):
        started, total = time.monotonic(), 0.0
        random.Random(args.seed + epoch).shuffle(train)
        trainer.model.train()
        for number, npc in enumerate(train, 1):
            loss = trainer.loss(npc)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item()
            print(f"\repoch {epoch}/{epochs}: NPC {number}/{len(train)}, loss {total / number:.3f}", end="", flush=True)
        trainer.model.eval()
        print(f"; held-out top-1 {trainer.top1(held_out):.3f} ({time.monotonic() - started:.0f} s)")
    out.parent.mkdir(parents=True, exist_ok=True)
    save_adapters(trainer.adapters, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB); `npcserver prepare` merges it into {args.base}-npc")


if __name__ == "__main__":
    main()
