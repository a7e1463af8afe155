"""Write demo/data/general_replay.jsonl: general questions answered by the base model itself.

Replay data against forgetting (ingest.datasets ``replay: true``): training on the support data alone
made the demo model's answers to general questions less like the base model's (held-out perplexity
4.62 -> 7.65). Mixing in the base model's own answers to other general questions anchors it where
it was. The answers are sampled at temperature 1 (top_p 0.95), the base model's own distribution,
not a tidier one; an answer cut by the token budget is cut back to its last full sentence, and one
left shorter than 40 characters is dropped. No question is near a held-out (MT-Bench) question:
validate's leakage gate checks that on every run.

``python demo/make_replay.py [--model smollm2-135m-instruct] [--out demo/data/general_replay.jsonl]``
(minutes on 2 CPU cores: 64 answers of up to 200 tokens; sampling makes a rerun differ in its words, not in its purpose).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = [  # eight each: reasoning, math, coding, writing, roleplay, extraction, stem, humanities
 # reasoning / everyday logic
 "If it takes five minutes to boil one egg, how long does it take to boil three eggs together in the same pot?",
 "Sarah is taller than Ben, and Ben is taller than Lucy. Who is the shortest of the three?",
 "A farmer has 12 sheep and all but 5 run away. How many sheep does he have left?",
 "Why do we see lightning before we hear thunder?",
 "If today is Wednesday, what day of the week will it be in ten days?",
 "Explain why a heavy ship made of steel can float on water.",
 "What is the difference between weather and climate?",
 "Give three reasons why someone might prefer taking the train over driving.",
 # math
 "What is 15% of 80?",
 "A rectangle is 6 cm long and 4 cm wide. What are its area and perimeter?",
 "Solve for x: 3x + 7 = 22.",
 "What is the sum of the angles in a triangle, and why?",
 "Convert 5 kilometres to miles, roughly.",
 "If a shirt costs $40 and is on sale for 25% off, what is the sale price?",
 "What is the average of 4, 8, 15 and 21?",
 "Is 91 a prime number? Explain.",
 # coding
 "Write a Python function that checks whether a string is a palindrome.",
 "How do I reverse a list in Python?",
 "Explain what a for loop does, with a short example in JavaScript.",
 "Write a SQL query that counts the rows in a table called orders.",
 "What is the difference between a list and a tuple in Python?",
 "Write a Python function that returns the largest number in a list without using max().",
 "What does the git command 'git status' show?",
 "Explain what recursion is in one paragraph.",
 # writing
 "Write a short thank-you note to a neighbour who watered my plants while I was away.",
 "Write a haiku about autumn leaves.",
 "Give me a catchy title for a blog post about learning to cook at home.",
 "Write two sentences describing a rainy afternoon in a city.",
 "Draft a polite email asking a colleague to move our meeting to Friday.",
 "Summarise the story of Little Red Riding Hood in three sentences.",
 "Write a short motivational message for someone starting a new job.",
 "Suggest a name for a small bakery that sells bread and pastries.",
 # roleplay
 "Pretend you are a tour guide in Rome and welcome a group of visitors.",
 "Act as a fitness coach and suggest a ten-minute morning routine.",
 "Imagine you are a librarian. Recommend a book to a teenager who loves adventure stories.",
 "You are a chef. Explain how to make a simple tomato sauce.",
 "Play the role of a friendly museum robot greeting children.",
 "Act as a travel agent and suggest a weekend trip for someone who likes mountains.",
 "Pretend you are a pirate captain giving orders to your crew.",
 "You are a gardener. How should I care for a tomato plant in summer?",
 # extraction
 "List the colours mentioned in this sentence: The red car parked next to a blue van and a yellow bike.",
 "Extract the dates from this text: The meeting moved from March 3 to March 10, and the report is due April 1.",
 "From the sentence 'Maria flew from Madrid to Berlin on Tuesday', who travelled, from where, to where, and when?",
 "Classify these animals as mammals or birds: eagle, dolphin, sparrow, bat.",
 "Which words in this sentence are verbs: The children ran, laughed and played in the park.",
 "Turn this list into a sentence: apples, bread, milk, eggs.",
 "Count the vowels in the word 'education'.",
 "What is the main idea of this sentence: Regular exercise improves sleep, mood and overall health.",
 # stem
 "What causes the seasons on Earth?",
 "Explain how vaccines help the immune system.",
 "What is the water cycle?",
 "Why is the sky blue?",
 "What is the difference between an atom and a molecule?",
 "How does a rainbow form?",
 "What does DNA stand for, and what does it do?",
 "Explain what gravity is to a ten-year-old.",
 # humanities
 "Why did the Roman Empire build roads?",
 "What are some good habits for managing personal finances?",
 "Give three tips for making a good first impression at an interview.",
 "What is the purpose of a constitution?",
 "Why do people celebrate New Year in different ways around the world?",
 "What are the benefits of learning a second language?",
 "Describe the role of a mayor in a city.",
 "What makes a good friend?",
]


def finished(answer: str, ended: bool) -> str:
    """The answer as it stands when the model ended it; else cut back to its last full sentence ('' if none)."""
    answer = answer.strip()
    if ended:
        return answer
    cut = max(answer.rfind(". "), answer.rfind(".\n"), answer.rfind("! "), answer.rfind("? "))
    return answer[: cut + 1].strip() if cut > 0 else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--out", type=Path, default=ROOT / "demo" / "data" / "general_replay.jsonl")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch

    from steps.models.loading import load_model, load_tokenizer

    tok, model = load_tokenizer(args.model), load_model(args.model).eval()
    tok.padding_side = "left"
    end = tok.convert_tokens_to_ids("<|im_end|>")
    torch.manual_seed(args.seed)
    rows = []
    for start in range(0, len(PROMPTS), 16):
        chunk = PROMPTS[start : start + 16]
        texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in chunk]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=200, do_sample=True, temperature=1.0, top_p=0.95, pad_token_id=tok.pad_token_id)
        for prompt, row in zip(chunk, out[:, enc["input_ids"].shape[1] :]):
            answer = finished(tok.decode(row, skip_special_tokens=True), end in row.tolist())
            if len(answer) >= 40:
                rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]})
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{args.out}: {len(rows)} of {len(PROMPTS)} questions answered")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
