"""Multi-step arithmetic word problems with integer answers, generated (seeded) from templates
written for this project: varied in kind (shopping, rates, time, sharing, ages, percentages,
unit conversion, work and remainders), two to four steps each. Not items of any public benchmark.

    python bench/reasoning_set.py --count 5   # print a few
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

__all__ = ["Problem", "problems"]

NAMES = ["Amara", "Bruno", "Chen", "Dalia", "Emeka", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kiri", "Lena",
         "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tamsin", "Uma", "Viktor", "Wren", "Yusuf"]
ITEMS = [("notebook", "notebooks"), ("apple", "apples"), ("ticket", "tickets"), ("mug", "mugs"),
         ("pencil", "pencils"), ("loaf of bread", "loaves of bread"), ("battery", "batteries"), ("plant", "plants")]


@dataclass(frozen=True)
class Problem:
    kind: str
    question: str
    answer: int


def _shopping(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    (_, many), (_, many2) = r.sample(ITEMS, 2)
    a, pa, b, pb = r.randint(2, 9), r.randint(2, 15), r.randint(2, 6), r.randint(3, 20)
    paid = (a * pa + b * pb) // 10 * 10 + r.choice([10, 20, 50])
    return Problem("shopping", f"{name} buys {a} {many} at {pa} dollars each and {b} {many2} at {pb} dollars "
                   f"each, and pays with {paid} dollars. How many dollars of change does {name} get?",
                   paid - a * pa - b * pb)


def _rate(r: random.Random) -> Problem:
    speed, hours, extra = r.randint(30, 90), r.randint(2, 5), r.randint(10, 60)
    return Problem("rates", f"A train travels at {speed} kilometres per hour for {hours} hours, then another "
                   f"{extra} kilometres to reach the station. How many kilometres does it travel in all?",
                   speed * hours + extra)


def _time(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    start_h, start_m = r.randint(7, 10), r.choice([0, 15, 30, 45])
    tasks = [r.choice([15, 20, 25, 30, 40, 45]) for _ in range(3)]
    end = start_h * 60 + start_m + sum(tasks)
    return Problem("time", f"{name} starts work at {start_h}:{start_m:02d}. The first task takes {tasks[0]} minutes, "
                   f"the second {tasks[1]} minutes and the third {tasks[2]} minutes. How many minutes after "
                   f"midnight does {name} finish the third task?", end)


def _sharing(r: random.Random) -> Problem:
    friends, each, left = r.randint(3, 8), r.randint(4, 12), r.randint(1, 5)
    total = friends * each + left
    (_, many) = r.choice(ITEMS)
    return Problem("sharing", f"There are {total} {many} shared equally among {friends} friends, and the ones "
                   f"that cannot be shared equally are kept aside. Each friend then gives 2 away. How many "
                   f"{many} does each friend have left?", each - 2)


def _ages(r: random.Random) -> Problem:
    a, b = r.sample(NAMES, 2)
    age_b, diff, years = r.randint(5, 20), r.randint(2, 15), r.randint(3, 12)
    return Problem("ages", f"{a} is {diff} years older than {b}. {b} is {age_b} years old now. How old will "
                   f"{a} be in {years} years?", age_b + diff + years)


def _percent(r: random.Random) -> Problem:
    price = r.choice([40, 60, 80, 120, 150, 200, 250, 300])
    off = r.choice([10, 20, 25, 50])
    qty = r.randint(2, 5)
    return Problem("percent", f"A jacket costs {price} dollars. It is on sale for {off} percent off. How many "
                   f"dollars do {qty} jackets cost at the sale price?", price * (100 - off) // 100 * qty)


def _units(r: random.Random) -> Problem:
    bottles, ml, glass = r.randint(2, 6), r.choice([500, 750, 1000, 1500]), r.choice([125, 250])
    return Problem("units", f"A party has {bottles} bottles of juice with {ml} millilitres each. Each glass "
                   f"holds {glass} millilitres. How many full glasses can be poured?", bottles * ml // glass)


def _work(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    per_day, days, sold = r.randint(6, 20), r.randint(3, 7), r.randint(5, 30)
    return Problem("work", f"{name} bakes {per_day} cakes a day for {days} days and sells {sold} of them. "
                   f"The rest are packed in boxes of 2. How many boxes are filled?",
                   (per_day * days - sold) // 2 if per_day * days > sold else 0)


def _remainder(r: random.Random) -> Problem:
    people, seats = r.randint(40, 200), r.choice([4, 6, 8, 10, 12])
    return Problem("remainder", f"{people} people come to a dinner and sit at tables of {seats}. Every table "
                   f"that is used needs one vase. How many vases are needed?", -(-people // seats))


def _savings(r: random.Random) -> Problem:
    name = r.choice(NAMES)
    weekly, weeks, spent, gift = r.randint(5, 25), r.randint(4, 10), r.randint(10, 40), r.randint(5, 30)
    return Problem("savings", f"{name} saves {weekly} dollars a week for {weeks} weeks, spends {spent} dollars "
                   f"on a game and then gets a gift of {gift} dollars. How many dollars does {name} have now?",
                   weekly * weeks - spent + gift)


KINDS = [_shopping, _rate, _time, _sharing, _ages, _percent, _units, _work, _remainder, _savings]


def problems(count: int = 60, seed: int = 21) -> list[Problem]:
    """`count` problems, every kind in turn, each from its own seeded draw."""
    r = random.Random(seed)
    return [KINDS[i % len(KINDS)](r) for i in range(count)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=60)
    ap.add_argument("--seed", type=int, default=21)
    for p in problems(ap.parse_args().count, ap.parse_args().seed):
        print(f"[{p.kind}] {p.question} -> {p.answer}")
