"""A rollout worker that wraps each prompt in the model's chat template (SmolLM2 is an instruct
model), with a short system message instead of the template's long default one."""

from __future__ import annotations

from nexrl_runtime.data.loader import Item
from nexrl_runtime.rollout.worker import RolloutWorker

SYSTEM = "You are a concise assistant."


class ChatWorker(RolloutWorker):
    def build_prompt(self, item: Item) -> list[int]:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": str(item.prompt)}]
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(str(text), add_special_tokens=False)["input_ids"])
