"""Score a (partial) run of bench/conversation.py from its log: its checks on the answers the log
holds, and the memory checks on the stores it left in the temp dir (conv-*), for scripts whose every
turn was logged. Stores of today's code (no 'profile' in its messages' timings) count for `base`.

    python bench/conversation_rescore.py RUN.log base|new
"""

import ast
import glob
import json
import re
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import conversation as c

log, which = sys.argv[1], sys.argv[2]
by_name = {s.name: s for s in c.SCRIPTS}
tally = c.Tally()
cur = None
done_scripts = []
lines = Path(log).read_text().splitlines()
for line in lines:
    if re.match(r"^[a-z0-9-]+$", line) and line in by_name:
        cur = by_name[line]
        done_scripts.append(cur)
        continue
    m = re.match(r"^  (['\"].*) -> (['\"].*) \(([\d.]+) s\)$", line)
    if m and cur:
        said, answer = ast.literal_eval(m.group(1)), ast.literal_eval(m.group(2))
        turn = next(t for t in cur.turns if isinstance(t, c.T) and t.text[:60] == said)
        c._answer_checks(tally, cur, turn, answer)
        tally.first_audio_s.append(float(m.group(3)))
# memory checks: only for scripts whose every turn was logged
class M:  # a memory row
    def __init__(self, r):
        self.text, self.status = r



for s in done_scripts:
    n_turns = sum(isinstance(t, c.T) for t in s.turns)
    for db in glob.glob(f"{tempfile.gettempdir()}/conv-*/assistant.sqlite3"):
        con = sqlite3.connect(db)
        u = con.execute("SELECT id FROM users WHERE name = ?", (f"bench-{s.name}",)).fetchone()
        if not u:
            continue
        sql = "SELECT timings FROM messages WHERE role = 'assistant' AND user_id = ?"
        t = [json.loads(r[0]) for r in con.execute(sql, u)]
        if len(t) != n_turns or (("profile" in t[0]) != (which == "new")):
            continue
        c._memory_checks(tally, s, [M(r) for r in con.execute("SELECT text, status FROM memories WHERE user_id=?", u)])
        break
names = [s.name for s in done_scripts]
print(f"{which}: {tally.right}/{tally.total} checks right over {len(tally.first_audio_s)} turns in {names}")
print("\n".join(tally.failures))
