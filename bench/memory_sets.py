"""Long multi-session conversations with known evidence, for bench/memory.py's recall@10.

Two sets, each 5 conversations of two named speakers over 12 dated sessions (~1900 turns a set):

- `dev` (seed 1, the DEV bank): 125 questions; tune recall on this one.
- `heldout` (seed 2, the HELDOUT bank: other names, topics, filler and fact templates): 100
  questions; never tune on it, only report it.

A question's evidence is the 1-3 turns that answer it; often the other speaker says a like line
(their own job, their own first race), so who said it matters. Kinds, as in the long-conversation memory
benchmarks: single-hop (one stated fact), temporal (needs a session's date: "when did ..." or a
question naming a month that tells two like events apart), multi-hop (two turns in different
sessions combined) and open-domain (an inference from a stated fact, few words in common).
Everything is generated from templates with a seeded random.Random: the same set every run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["Conversation", "Question", "build"]

SESSIONS = 12
TURNS_PER_SESSION = (26, 38)  # a session's length, drawn between these
DECOY_RATE = {"single-hop": 0.5, "temporal": 0.5, "open-domain": 0.3}  # the other speaker says a like line


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    conversation: str  # the user the conversation was imported for
    text: str
    kind: str  # single-hop | temporal | multi-hop | open-domain
    evidence: tuple[str, ...]  # source ids of the turns that answer it


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    speakers: tuple[str, str]
    turns: list[dict]  # import lines: {"text", "speaker", "time", "source_id"}


# A fact: (kind, evidence templates said by the subject, each in its own session, question,
# the other speaker's reply right after the first evidence turn (or None), slot values). A value
# may be a tuple: its parts fill {slot_0}, {slot_1}. Kind "temporal-month": the evidence is said
# once and a decoy (the same template, another value) in a session of another month; the question
# names the evidence's month.
DEV = {
    "names": ["Maya", "Jonas", "Priya", "Tomasz", "Elena", "Marcus", "Aiko", "Diego", "Nora", "Samir"],
    "topics": {
        "work": (["Work has been exhausting, the {project} deadline keeps moving.",
                  "My manager asked me to present the {project} numbers on Monday.",
                  "We had three meetings today about the {project}, and nothing got decided.",
                  "I stayed late again to fix a bug in the {project}."],
                 ["That sounds stressful, I hope it calms down soon.", "Ugh, meetings like that are the worst.",
                  "Did they at least thank you for staying late?", "You deserve a long weekend after that."]),
        "weekend": (["This weekend we just stayed in and watched {show}.",
                     "On Saturday I cleaned the whole flat and then ordered {takeaway}.",
                     "We might go to the farmers market on Sunday if it doesn't rain.",
                     "I spent Sunday afternoon at the park with a coffee and a book."],
                    ["Honestly that sounds like a perfect weekend.", "I love lazy weekends like that.",
                     "Was {show} any good? I keep hearing about it.", "Nothing beats {takeaway} after cleaning."]),
        "weather": (["It has been raining nonstop here for a week.", "The heat today was unbearable, 34 degrees.",
                     "We finally got some sunshine this morning.", "The wind knocked over our recycling bins again."],
                    ["Same here, I'm so tired of grey skies.", "Stay cool and drink lots of water!",
                     "Enjoy it while it lasts.", "Haha, the bins always lose against the wind."]),
        "food": (["I tried making {dish} from scratch last night.",
                  "We ordered {takeaway} and it was cold when it came.",
                  "I'm trying to cook at home more to save money.", "Have you ever had {dish}? I'm obsessed."],
                 ["Ooh, send me the recipe!", "Cold food is such a letdown.", "Cooking at home is so worth it.",
                  "I've never tried {dish}, I should."]),
        "screen": (["Have you started watching {show} yet?", "I stayed up way too late finishing {show}.",
                    "The new season of {show} is a bit disappointing.", "We went to the cinema to see a horror film."],
                   ["Not yet, no spoilers please!", "I did the same thing last week.",
                    "I agree, the first season was better.", "I can't do horror films, I'd never sleep."]),
        "commute": (["The train was delayed forty minutes this morning.", "I've started cycling to work on dry days.",
                     "Traffic on the ring road was a nightmare today.", "I listen to audiobooks on my commute now."],
                    ["That's so annoying, did you get there on time?", "Cycling is great exercise.",
                     "I avoid the ring road at all costs.", "Audiobooks make the commute fly by."]),
    },
    "pools": {"project": ["website redesign", "budget review", "app launch", "warehouse migration", "client audit"],
              "show": ["The Bear", "Severance", "a baking show", "a true crime series", "Slow Horses"],
              "takeaway": ["pizza", "Thai food", "sushi", "fish and chips", "a curry"],
              "dish": ["ramen", "pierogi", "shakshuka", "paella", "dumplings"]},
    "reactions": ["Ha, that's so true.", "Oh really? Tell me more.", "I know exactly what you mean.",
                  "That's wonderful to hear!", "Oh no, that's rough.", "Wow, good for you.", "Haha, classic."],
    "greetings": ["Hey {O}! How have you been?", "Hi {O}, it's been a while! What's new?",
                  "Good to talk again, {O}. How was your week?"],
    "closings": ["I have to run, talk soon!", "Okay, I'll let you go. Catch up next time!",
                 "It was great talking, see you soon."],
    "facts": [
        ("single-hop", ["We finally adopted a {animal} from the shelter, we named the little one {pet}."],
         "What did {S} name the {animal} they adopted?", "Aww, {pet} is such a cute name!",
         {"animal": ["kitten", "puppy", "rabbit", "parrot"], "pet": ["Biscuit", "Mochi", "Pepper", "Ziggy", "Noodle"]}),
        ("single-hop", ["I just started a new job as a {job}, my first week was intense."],
         "What is {S}'s new job?", "Congratulations on the new job!",
         {"job": ["pharmacist", "data analyst", "sous-chef", "paramedic", "carpenter", "librarian"]}),
        ("single-hop", ["My sister {rel} is moving to {city} for her PhD."], "Where is {S}'s sister moving to?",
         None, {"rel": ["Lena", "Ines", "Greta", "Sofia"], "city": ["Edinburgh", "Kyoto", "Montreal", "Utrecht"]}),
        ("single-hop", ["I've been learning to play the {instr}, my teacher says I'm improving."],
         "Which instrument is {S} learning?", "That's so cool, play me something sometime!",
         {"instr": ["cello", "banjo", "saxophone", "ukulele", "harp"]}),
        ("single-hop", ["I'm allergic to {allergen}, so I always check the labels."], "What is {S} allergic to?",
         "That must make eating out tricky.", {"allergen": ["sesame", "shellfish", "hazelnuts", "kiwi"]}),
        ("single-hop", ["Our daughter {kid} turns {age} next week and she keeps asking for a {gift}."],
         "What does {S}'s daughter want for her birthday?", None,
         {"kid": ["Mila", "Ava", "Zoe", "Hannah"], "age": ["six", "eight", "ten"],
          "gift": ["telescope", "microscope", "drum kit", "hamster"]}),
        ("single-hop", ["I drive a {colour} {car} that I bought second-hand."], "What car does {S} drive?", None,
         {"colour": ["dark green", "silver", "bright red"], "car": ["Volvo estate", "Honda Jazz", "Fiat Panda"]}),
        ("single-hop", ["I grew up in {city}, right by the harbour."], "Where did {S} grow up?",
         "I had no idea you grew up by the sea!", {"city": ["Gdansk", "Valparaiso", "Halifax", "Porto"]}),
        ("single-hop", ["I volunteer at the {vol} every Saturday morning."], "Where does {S} volunteer?", None,
         {"vol": ["animal shelter", "food bank", "children's hospital", "community garden"]}),
        ("single-hop", ["I signed up for a {course} course at the community college."],
         "What course did {S} sign up for?", "Oh nice, when does it start?",
         {"course": ["pottery", "Spanish", "welding", "photography", "accounting"]}),
        ("temporal", ["I ran my first {race} yesterday, my legs are still sore!"],
         "When did {S} run their first {race}?", "Amazing, congratulations!",
         {"race": ["half marathon", "10k race", "marathon", "trail race"]}),
        ("temporal", ["We went to the {band} concert last night, it was incredible."],
         "When did {S} see {band} live?", "Jealous! I've always wanted to see them.",
         {"band": ["Arctic Monkeys", "Florence and the Machine", "Coldplay", "Radiohead"]}),
        ("temporal", ["I had my interview at {company} this morning, fingers crossed."],
         "When was {S}'s interview at {company}?", "Good luck, I'm sure you did great.",
         {"company": ["Spotify", "the city council", "Siemens", "a law firm"]}),
        ("temporal", ["I passed my driving test today, on the third attempt!"], "When did {S} pass the driving test?",
         "Third time lucky!", {}),
        ("temporal-month", ["I tried a new {cuisine} restaurant near my place tonight."],
         "Which kind of restaurant did {S} try in {month}?", None,
         {"cuisine": ["Ethiopian", "Georgian", "Korean", "Peruvian", "Lebanese"]}),
        ("temporal-month", ["I finished reading {book} this week, what an ending."],
         "What book did {S} finish reading in {month}?", None,
         {"book": ["Dune", "Pachinko", "The Overstory", "Circe", "Project Hail Mary"]}),
        ("temporal-month", ["We took a day trip to {town} on Saturday."], "Where did {S} go on a day trip in {month}?",
         None, {"town": ["Bath", "Whitby", "Bruges", "Sintra", "Delft"]}),
        ("multi-hop", ["My uncle {rel} gave me his old {instr}.",
                       "{rel} just moved to {city}, he says the winters there are brutal."],
         "Which city did the relative who gave {S} a {instr} move to?", None,
         {"rel": ["Felix", "Anton", "Rui", "Walter"], "instr": ["guitar", "accordion", "trumpet"],
          "city": ["Tallinn", "Winnipeg", "Oslo", "Minsk"]}),
        ("multi-hop", ["My colleague {rel} recommended a podcast about {pod} to me.",
                       "{rel} is leaving our team to open a {biz}."],
         "What business is the colleague who recommended {S} a podcast opening?", None,
         {"rel": ["Hugo", "Kemal", "Yusuf", "Bram"], "pod": ["ancient Rome", "space travel", "unsolved crimes"],
          "biz": ["bakery", "bike repair shop", "climbing gym", "bookshop"]}),
        ("multi-hop", ["Our neighbour {rel} has a {breed} that keeps digging up our garden.",
                       "{rel} broke her leg skiing in {place}."],
         "Where did the neighbour whose dog digs in {S}'s garden get injured?", None,
         {"rel": ["Mrs Patel", "Brigitte", "Carla", "Joan"], "breed": ["beagle", "terrier", "dachshund"],
          "place": ["the Alps", "Andorra", "the Dolomites", "Colorado"]}),
        ("multi-hop", ["I bought a {item} from a tiny shop run by a woman called {rel}.",
                       "Turns out {rel} used to be a {job} before she retired."],
         "What did the shop owner who sold {S} a {item} do before retiring?", None,
         {"item": ["teapot", "wool scarf", "lamp", "vinyl record"], "rel": ["Dolores", "Agnes", "Mireille"],
          "job": ["pilot", "surgeon", "opera singer", "judge"]}),
        ("multi-hop", ["My cousin {rel} lent me his {vehicle} for the summer.",
                       "{rel} is training hard for a {sport} competition."],
         "What is the cousin who lent {S} a {vehicle} training for?", None,
         {"rel": ["Mateo", "Lukas", "Olek"], "vehicle": ["camper van", "motorbike", "canoe"],
          "sport": ["judo", "rowing", "triathlon", "powerlifting"]}),
        ("open-domain", ["I've been {diet_0} for six years now, no exceptions."],
         "Would {S} eat {diet_1} at the barbecue?", None,
         {"diet": [("vegan", "a beef burger"), ("vegetarian", "chicken wings"), ("pescatarian", "pork ribs")]}),
        ("open-domain", ["Heights terrify me, I can't even stand on a balcony."], "Would {S} enjoy a skydiving trip?",
         "Oh, I didn't know that!", {}),
        ("open-domain", ["Every weekend I'm out on mountain trails with my boots and a map."],
         "What kind of holiday would {S} probably enjoy?", None, {}),
        ("open-domain", ["I get seasick even on a short ferry, it's awful."],
         "Would {S} like to go on a week-long cruise?", None, {}),
        ("open-domain", ["Since the twins were born we barely sleep more than five hours."], "Does {S} have children?",
         "Hang in there, it gets easier!", {}),
        ("open-domain", ["I've lived with type 1 diabetes since I was nine."],
         "Does {S} need to be careful with sugary desserts?", None, {}),
        ("open-domain", ["I'm putting every spare penny towards a deposit for a flat."],
         "Is {S} likely to buy an expensive sports car soon?", None, {}),
        ("open-domain", ["My whole family speaks {lang} at home."], "Which language could {S} translate for a friend?",
         None, {"lang": ["Tagalog", "Portuguese", "Hungarian", "Swahili"]}),
        ("open-domain", ["I haven't had a drop of alcohol in ten years."],
         "Would {S} want to join a wine-tasting tour?", None, {}),
        ("open-domain", ["I work night shifts at the hospital, so I sleep until noon."],
         "Would {S} be free for a breakfast meeting at 8 am?", None, {}),
    ],
    "quota": {"single-hop": 8, "temporal": 6, "multi-hop": 5, "open-domain": 6},
}

HELDOUT = {
    "names": ["Oliwia", "Kwame", "Ingrid", "Rafael", "Yuki", "Bastian", "Leila", "Callum", "Freya", "Arjun"],
    "topics": {
        "garden": (["The slugs ate half my {veg} again.", "I spent the morning weeding the vegetable patch.",
                    "Our {veg} finally came up after two weeks.", "I'm thinking of building a raised bed this spring."],
                   ["Try beer traps, they work for slugs.", "Weeding is weirdly relaxing.",
                    "Homegrown {veg} tastes so much better.", "Raised beds save your back, do it."]),
        "games": (["We played {game} until midnight with the neighbours.", "I finally beat my brother at {game}.",
                   "Game night is at ours on Friday, bring snacks.", "I bought an expansion for {game}."],
                  ["I love {game}, count me in next time!", "Ha, sibling rivalry at its finest.",
                   "I'll bring crisps and dip.", "Is the expansion worth it?"]),
        "house": (["The plumber still hasn't come to fix the leak.", "We're repainting the hallway {paint}.",
                   "The boiler made a strange noise all night.", "I assembled a flat-pack wardrobe by myself."],
                  ["Plumbers are impossible to book these days.", "{paint} sounds lovely for a hallway.",
                   "That sounds expensive, get it checked.", "Impressive, those instructions are a puzzle."]),
        "news": (["Did you see the news about the bridge closure?", "They're building a new tram line near us.",
                  "Petrol prices went up again this week.", "Our town is getting a new library."],
                 ["Yes, the detour is going to be awful.", "Finally, the buses are always packed.",
                  "Everything is getting more expensive.", "A library is great news for the kids."]),
        "gym": (["Leg day destroyed me, I can barely walk.", "I've been going to the gym at six in the morning.",
                 "My trainer added {exercise} to my routine.", "The gym was packed, I waited ages for a bench."],
                ["No pain, no gain, right?", "Six am? That's dedication.", "{exercise} is brutal but effective.",
                 "January crowds, it'll calm down."]),
        "podcast": (["I've been bingeing a podcast about {pod}.", "The host of that {pod} podcast is hilarious.",
                     "I listen to podcasts while doing the dishes.", "Any podcast recommendations for a long drive?"],
                    ["Send me the link!", "Good hosts make all the difference.", "Same, chores go faster that way.",
                     "Try anything about {pod}, it's gripping."]),
    },
    "pools": {"veg": ["lettuce", "courgettes", "beans", "strawberries"],
              "game": ["Catan", "Ticket to Ride", "Codenames", "Scrabble"],
              "paint": ["sage green", "warm white", "navy blue"],
              "exercise": ["deadlifts", "burpees", "lunges"],
              "pod": ["shipwrecks", "cold cases", "economics", "the Vikings"]},
    "reactions": ["No way!", "Fair enough.", "That makes sense.", "Oh wow.", "Right? Same here.",
                  "Love that for you.", "Hmm, I'm not sure about that.", "Totally agree."],
    "greetings": ["Morning {O}! Got a minute to chat?", "{O}! Finally, I've been meaning to message you.",
                  "Hiya {O}, how's everything going?"],
    "closings": ["Right, dinner's ready, speak later!", "Gotta go, the kids need me.", "Talk tomorrow, take care!"],
    "facts": [
        ("single-hop", ["My grandad left me his {heirloom} and I keep it on my desk."],
         "What did {S}'s grandfather leave them?", "That's a lovely thing to have.",
         {"heirloom": ["pocket watch", "compass", "typewriter", "chess set"]}),
        ("single-hop", ["I'm training to become a {trade} through an apprenticeship."],
         "What is {S} training to become?", None, {"trade": ["electrician", "plumber", "baker", "stonemason"]}),
        ("single-hop", ["Our tortoise {pet} is older than me, he's 41."], "What is the name of {S}'s tortoise?",
         "41! That's wild.", {"pet": ["Gerald", "Bartholomew", "Shelly", "Kojak"]}),
        ("single-hop", ["My brother {rel} works as a lighthouse keeper in {place}."],
         "What does {S}'s brother do for work?", None,
         {"rel": ["Eoin", "Mikkel", "Tobias"], "place": ["Shetland", "Brittany", "Nova Scotia"]}),
        ("single-hop", ["I collect old {collect}, I have about three hundred now."], "What does {S} collect?", None,
         {"collect": ["postcards", "fountain pens", "film cameras", "football shirts"]}),
        ("single-hop", ["We're getting married at a {venue} in {city} next spring."],
         "Where is {S}'s wedding taking place?", "Oh my goodness, congratulations!",
         {"venue": ["vineyard", "castle", "botanical garden"], "city": ["Verona", "Cork", "Ghent"]}),
        ("single-hop", ["My blood type is {blood}, so they always ask me to donate."], "What is {S}'s blood type?",
         None, {"blood": ["O negative", "AB positive", "B negative"]}),
        ("single-hop", ["I'm fluent in {lang} because I lived there for five years."],
         "Which language is {S} fluent in?", None, {"lang": ["Finnish", "Korean", "Greek", "Turkish"]}),
        ("temporal", ["The baby arrived this morning, a little boy called {kid}!"],
         "When was {S}'s baby {kid} born?", "Congratulations!! Welcome, little {kid}!",
         {"kid": ["Theo", "Kofi", "Emil", "Rohan"]}),
        ("temporal", ["I handed in my resignation letter today, no turning back now."],
         "When did {S} resign from their job?", "Wow, brave move!", {}),
        ("temporal", ["We got the keys to our new house this afternoon."], "When did {S} move into the new house?",
         None, {}),
        ("temporal-month", ["I repainted the {room} this weekend."], "Which room did {S} repaint in {month}?", None,
         {"room": ["kitchen", "bathroom", "spare bedroom", "garage", "nursery"]}),
        ("temporal-month", ["We hosted a {party} for the whole street yesterday."],
         "What kind of party did {S} host in {month}?", None,
         {"party": ["barbecue", "quiz night", "pancake breakfast", "karaoke night"]}),
        ("temporal-month", ["I bought a second-hand {gadget} online this week."],
         "What did {S} buy second-hand in {month}?", None,
         {"gadget": ["e-reader", "sewing machine", "espresso machine", "drone"]}),
        ("multi-hop", ["My flatmate {rel} borrowed my {thing} and hasn't given it back.",
                       "{rel} just got a job offer from a {firm} in {city}."],
         "Which city is the flatmate who borrowed {S}'s {thing} getting a job in?", None,
         {"rel": ["Dominic", "Petra", "Selin"], "thing": ["tent", "drill", "projector"],
          "firm": ["bank", "game studio", "shipping company"], "city": ["Rotterdam", "Dublin", "Lyon"]}),
        ("multi-hop", ["My piano teacher {rel} is the one who got me into jazz.",
                       "{rel} is recording an album in {place} this summer."],
         "Where is the teacher who got {S} into jazz recording an album?", None,
         {"rel": ["Mr Okafor", "Beatriz", "Solveig"], "place": ["New Orleans", "a barn in Wales", "Havana"]}),
        ("multi-hop", ["The vet who treated our cat is called Dr {rel}.",
                       "Dr {rel} runs ultramarathons in the {terrain} on weekends."],
         "What does the vet who treated {S}'s cat do on weekends?", None,
         {"rel": ["Haddad", "Lindqvist", "Moreau"], "terrain": ["desert", "mountains", "fens"]}),
        ("multi-hop", ["Our landlord {rel} is finally fixing the roof.",
                       "{rel} told me he is selling the building to a {buyer}."],
         "Who is the landlord fixing {S}'s roof selling the building to?", None,
         {"rel": ["Mr Grant", "Stavros", "Pieter"], "buyer": ["hotel chain", "university", "developer"]}),
        ("open-domain", ["I've been a die-hard {team_0} supporter since I was a kid."],
         "Which city's football team does {S} follow?", None,
         {"team": [("Liverpool", "Liverpool"), ("Celtic", "Glasgow"), ("Ajax", "Amsterdam")]}),
        ("open-domain", ["I'm lactose intolerant, even a latte ruins my day."],
         "Would {S} be happy with a cheese fondue dinner?", None, {}),
        ("open-domain", ["I use a wheelchair since the accident."], "Could {S} easily climb a lighthouse staircase?",
         None, {}),
        ("open-domain", ["Our flat is on the fifth floor and the lift is broken again."],
         "Does {S} live in a house with a garden?", None, {}),
        ("open-domain", ["I'm a Muslim and I'm fasting for Ramadan this month."],
         "Would {S} come to a lunchtime picnic this month?", None, {}),
        ("open-domain", ["I failed my maths exam twice, numbers just confuse me."],
         "Would {S} make a good accountant?", None, {}),
        ("open-domain", ["Our three dogs sleep on the bed with us every night."],
         "Does {S} like animals?", "Three dogs on one bed sounds cosy.", {}),
    ],
    "quota": {"single-hop": 6, "temporal": 5, "multi-hop": 4, "open-domain": 5},
}

SETS = {"dev": (DEV, 1), "heldout": (HELDOUT, 2)}


def build(name: str) -> tuple[list[Conversation], list[Question]]:
    """The set called `name` ('dev' or 'heldout'): its conversations and questions."""
    bank, seed = SETS[name]
    rng = random.Random(seed)
    conversations, questions = [], []
    for c in range(5):
        conv, qs = _conversation(bank, rng, f"{name}{c}")
        conversations.append(conv)
        questions += qs
    return conversations, questions


def _fill(template: str, values: dict[str, str]) -> str:
    return template.format(**values)


def _pick(rng: random.Random, spec_values: dict) -> dict[str, str]:
    out = {}
    for slot, options in spec_values.items():
        value = rng.choice(options)
        if isinstance(value, tuple):
            for i, part in enumerate(value):
                out[f"{slot}_{i}"] = part
        else:
            out[slot] = value
    return out


def _conversation(bank: dict, rng: random.Random, cid: str) -> tuple[Conversation, list[Question]]:
    a, b = rng.sample(bank["names"], 2)
    start = datetime(2023, rng.randint(1, 4), rng.randint(1, 28), rng.randint(8, 20), tzinfo=UTC)
    dates = [start]
    for _ in range(SESSIONS - 1):
        dates.append(dates[-1] + timedelta(days=rng.randint(8, 24), hours=rng.randint(-5, 5)))
    lengths = [rng.randint(*TURNS_PER_SESSION) for _ in range(SESSIONS)]
    # planted[session] = [(position, speaker, text, question key or None)]
    planted: dict[int, list[tuple[int, str, str, int | None]]] = {s: [] for s in range(SESSIONS)}
    plan = []  # (question text, kind, [(session, position)])
    by_kind: dict[str, list] = {}
    for spec in bank["facts"]:
        by_kind.setdefault("temporal" if spec[0].startswith("temporal") else spec[0], []).append(spec)
    used: set[tuple[int, int]] = set()

    def slot(session: int) -> int:
        while True:
            pos = rng.randint(3, lengths[session] - 4)
            if not used & {(session, pos - 1), (session, pos), (session, pos + 1)}:
                used.add((session, pos))
                return pos

    for kind, n in bank["quota"].items():
        for spec in rng.sample(by_kind[kind], n):
            skind, templates, question, reply, values = spec
            subject, other = (a, b) if rng.random() < 0.5 else (b, a)
            v = {"S": subject, "O": other, **_pick(rng, values)}
            sessions = sorted(rng.sample(range(SESSIONS), len(templates)))
            if len(templates) == 2 and sessions[1] - sessions[0] < 2:  # two sessions apart at least
                first = rng.randrange(SESSIONS - 2)
                sessions = [first, rng.randint(first + 2, SESSIONS - 1)]
            where = []
            for i, (s, template) in enumerate(zip(sessions, templates, strict=True)):
                pos = slot(s)
                planted[s].append((pos, subject, _fill(template, v), len(plan)))
                if reply and i == 0:
                    planted[s].append((pos + 1, other, _fill(reply, v), None))
                    used.add((s, pos + 1))
                where.append((s, pos))
            if skind == "temporal-month":  # the same kind of event in a session of another month
                month = dates[sessions[0]].month
                others = [s for s in range(SESSIONS) if dates[s].month != month]
                decoy = dict(v)
                for key, options in values.items():
                    decoy[key] = rng.choice([o for o in options if o != v[key]])
                s = rng.choice(others)
                planted[s].append((slot(s), subject, _fill(templates[0], decoy), None))
                v["month"] = f"{dates[sessions[0]]:%B %Y}"
            if skind in ("single-hop", "temporal", "open-domain") and rng.random() < DECOY_RATE[skind]:
                # the other speaker says the like of it (another value where there are values)
                decoy = {**v, **_pick(rng, {k: [o for o in opts if o != v.get(k)] for k, opts in values.items()})}
                decoy["S"], decoy["O"] = other, subject
                s = rng.randrange(SESSIONS)
                planted[s].append((slot(s), other, _fill(templates[0], decoy), None))
            plan.append((_fill(question, v), kind, where))
    turns, ids = [], {}
    for s in range(SESSIONS):
        speaker = rng.choice([a, b])
        fixed = {pos: (who, text, q) for pos, who, text, q in planted[s]}
        topic_lines: list[str] = []
        for t in range(lengths[s]):
            other = b if speaker == a else a
            values = {"O": other, **{k: rng.choice(p) for k, p in bank["pools"].items()}}
            if t in fixed:
                speaker, text, q = fixed[t]
                if q is not None:
                    ids.setdefault(q, []).append(f"{cid}:s{s}:t{t}")
            elif t == 0:
                text = _fill(rng.choice(bank["greetings"]), values)
            elif t == lengths[s] - 1:
                text = _fill(rng.choice(bank["closings"]), values)
            elif topic_lines and rng.random() < 0.8:
                text = topic_lines.pop(0)
            elif rng.random() < 0.2:
                text = rng.choice(bank["reactions"])
            else:  # a topic: a line, the answer to it, and perhaps another line on it
                opening, replies = bank["topics"][rng.choice(sorted(bank["topics"]))]
                i, j = rng.randrange(len(opening)), rng.randrange(len(opening))
                text = _fill(opening[i], values)
                topic_lines = [_fill(replies[i], values)] + ([_fill(opening[j], values)] if i != j else [])
            when = dates[s] + timedelta(seconds=45 * t)
            turns.append({"text": text, "speaker": speaker, "time": when.isoformat(), "source_id": f"{cid}:s{s}:t{t}"})
            speaker = b if speaker == a else a
    questions = [
        Question(f"{cid}:q{i}", cid, text, kind, tuple(ids[i])) for i, (text, kind, _where) in enumerate(plan)
    ]
    return Conversation(cid, (a, b), turns), questions


if __name__ == "__main__":
    for set_name in SETS:
        convs, qs = build(set_name)
        kinds = {k: sum(q.kind == k for q in qs) for k in ("single-hop", "temporal", "multi-hop", "open-domain")}
        print(f"{set_name}: {len(convs)} conversations, {sum(len(c.turns) for c in convs)} turns, "
              f"{len(qs)} questions {kinds}")  # fmt: skip
        for q in qs[:: max(1, len(qs) // 6)]:
            print(f"  {q.kind:<12} {q.text}  <- {q.evidence}")
