"""Writes prompts.json: the parity suite's prompts, of many kinds.

Each prompt is either raw text (`text`, tokenized with special tokens parsed and no BOS, as
llama.cpp's completion tools do) or a chat (`messages`, rendered with the model's own ChatML
template and a generation prompt). The long prompts are passages of this book's own prose and
code, copied here once so that the suite does not change when the book does.

Run: python3 chapters-code/tests/parity/make_prompts.py
"""
import json
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[2]

prompts = []


def text(pid, kind, body):
    prompts.append({"id": pid, "kind": kind, "text": body})


def chat(pid, kind, *turns, system=None):
    messages = [] if system is None else [{"role": "system", "content": system}]
    for i, content in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": content})
    prompts.append({"id": pid, "kind": kind, "messages": messages})


# --- the book's reference prompt and plain prose
text("france", "prose", "The capital of France is")
text("prose-history", "prose", "The history of the printing press begins in the fifteenth century, when")
text("prose-science", "prose", "Photosynthesis is the process by which plants")
text("prose-story", "prose", "Once upon a time, in a village at the edge of a great forest, there lived an old clockmaker who")
text("prose-howto", "prose", "To replace a bicycle's inner tube, first")
text("prose-question", "prose", "Q: Why is the sky blue?\nA:")

# --- code in several languages
text("code-python", "code", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n")
text("code-rust", "code", "/// Returns the largest element of a slice, or None when it is empty.\nfn largest<T: PartialOrd>(items: &[T]) -> Option<&T> {\n")
text("code-js", "code", "// Debounce: call `fn` only after `ms` milliseconds without a new call.\nfunction debounce(fn, ms) {\n")
text("code-c", "code", "#include <stdio.h>\n\nint main(void) {\n    int sum = 0;\n    for (int i = 1; i <= 10; i++) {\n")
text("code-sql", "code", "-- The ten customers who spent the most in 2023\nSELECT c.name, SUM(o.total) AS spent\nFROM customers c\nJOIN orders o ON o.customer_id = c.id\n")
text("code-html", "code", "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n  <meta charset=\"utf-8\">\n  <title>My page</title>\n")

# --- structured text
text("json", "structured", "{\"name\": \"Ada Lovelace\", \"born\": 1815, \"fields\": [\"mathematics\", ")
text("markdown-table", "structured", "| Planet | Moons | Distance from the Sun (AU) |\n|---|---:|---:|\n| Mercury | 0 | 0.39 |\n| Venus | 0 | 0.72 |\n")
text("yaml", "structured", "services:\n  web:\n    image: nginx:1.25\n    ports:\n      - \"8080:80\"\n  db:\n")
text("csv", "structured", "date,city,temperature_c,rain_mm\n2024-01-01,Oslo,-4.5,0.0\n2024-01-02,Oslo,-6.1,1.2\n")
text("xml", "structured", "<?xml version=\"1.0\"?>\n<catalog>\n  <book id=\"bk101\">\n    <author>Gambardella, Matthew</author>\n")

# --- numbers
text("numbers-arithmetic", "numbers", "12 + 35 = 47\n81 - 19 = 62\n7 * 8 = 56\n144 / 12 =")
text("numbers-sequence", "numbers", "2, 3, 5, 7, 11, 13, 17,")
text("numbers-list", "numbers", "Shopping list:\n1. eggs\n2. flour\n3. milk\n4.")

# --- other languages and scripts
text("french", "language", "La tour Eiffel a été construite pour l'Exposition universelle de 1889, et")
text("german", "language", "Die Donau ist der zweitlängste Fluss Europas. Sie entspringt im Schwarzwald und")
text("spanish", "language", "El Quijote es una novela escrita por Miguel de Cervantes que cuenta la historia de")
text("chinese", "cjk", "长城是中国古代的伟大建筑，它")
text("japanese", "cjk", "東京は日本の首都で、")
text("korean", "cjk", "서울은 대한민국의 수도이며")
text("russian", "script", "Москва — столица России, а также")
text("arabic", "script", "القاهرة هي عاصمة مصر، وهي")
text("hindi", "script", "भारत की राजधानी नई दिल्ली है, और")
text("greek", "script", "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας και")

# --- emoji and odd characters
text("emoji-line", "emoji", "Today was great 🎉🎉 We went to the beach 🏖️ and ate ice cream 🍦")
text("emoji-only", "emoji", "🚀🌕✨")
text("emoji-after-text", "emoji", "My favourite animals: 🐶 dogs, 🐱 cats, and")
text("whitespace", "edge", "    indented line\n\t\ttabs\n\n\nthree newlines and   runs   of   spaces")
text("repeated", "edge", "ha ha ha ha ha ha ha ha ha ha ha ha")

# --- chats through the template
chat("chat-default-system", "chat", "What is the capital of France?")
chat("chat-haiku", "chat", "Write a haiku about the sea.")
chat("chat-code", "chat", "Write a Python function that reverses a string.")
chat("chat-explain", "chat", "Explain in two sentences what a KV cache is.")
chat("chat-system-pirate", "chat-system", "Where is the treasure?", system="You are a pirate. Answer like one.")
chat("chat-system-terse", "chat-system", "List three primary colours.", system="Answer with as few words as possible.")
chat("chat-system-french", "chat-system", "How are you today?", system="Always answer in French.")
chat("chat-multi-turn", "chat-multi-turn",
     "Hi! Can you help me plan a trip?",
     "Of course! Where would you like to go, and for how long?",
     "Three days in Rome, in spring. What should I see first?")
chat("chat-multi-turn-math", "chat-multi-turn",
     "What is 15 times 4?", "15 times 4 is 60.", "And if I divide that by 3?")
chat("chat-multi-turn-emoji", "chat-multi-turn",
     "Reply with emoji only: how do you feel today?", "😊☀️", "And about rain?")


# --- long prompts: passages of the book itself (300 to 1,500 tokens)
def passage(path, start_marker, chars):
    body = (ROOT / path).read_text()
    at = body.index(start_marker)
    return body[at:at + chars]


LONG = [
    ("long-prose-kv", "long", "book/src/week1/kv-cache.md", "# The KV cache", 1800),
    ("long-prose-batching", "long", "book/src/week1/continuous-batching.md", "# Continuous batching", 4200),
    ("long-code-rust", "long-code", "chapters-code/src/model/llama.rs", "// ANCHOR: forward", 3500),
    ("long-markdown", "long", "book/src/week2/quantization.md", "# Quantization", 3000),
]
EXISTING = HERE / "prompts.json"
frozen = {}
if EXISTING.exists():
    frozen = {p["id"]: p for p in json.loads(EXISTING.read_text())["prompts"]}
for pid, kind, path, marker, chars in LONG:
    if pid in frozen:  # frozen once written: the book's text may change, the suite must not
        prompts.append(frozen[pid])
    else:
        text(pid, kind, passage(path, marker, chars))
chat("long-chat-summary", "long-chat",
     "Summarize this text in one sentence:\n\n" + (frozen["long-prose-kv"]["text"] if "long-prose-kv" in frozen
                                                   else passage("book/src/week1/kv-cache.md", "# The KV cache", 1800)))

out = {
    "about": "The parity suite's prompts. Written by make_prompts.py; llama.cpp's reference "
             "outputs for them are written by xtask/src/peers/parity_reference.py.",
    "prompts": prompts,
}
EXISTING.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
print(f"{len(prompts)} prompts written to {EXISTING}")
