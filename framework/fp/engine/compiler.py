"""``experiment.compile``: torch.compile that survives the protocol's prune events, and says
whether it did.

Surgery gives the model new parameter shapes. Left to itself, dynamo's guards on the old model
fail and it recompiles under the same code object, until ``recompile_limit`` (8) is hit after
about 7 events; from then on it runs the model eagerly with a log warning only. So after every
surgery (and at the start, fresh or resumed) the ``Compiler`` compiles the new model
deliberately: dynamo's caches are cleared (``torch.compiler.reset``: the run is the process's
only compiled code) and the model is compiled afresh with dynamic shapes off, since its shapes
change only at prune events.

Whether each training step really ran compiled is counted, not assumed: the backend
(``experiment.compile_backend``, "inductor" by default; "eager" compiles graphs without
generating kernels, for tests on a CPU) is wrapped so that every call of a compiled graph is
seen. A step in which no compiled graph ran was run eagerly (dynamo gave up on the frame). The
counts live in ``run.state["compile"]`` (plain data, so a resumed run keeps counting): models
compiled, graphs compiled, steps, steps that ran compiled, and the epochs with eager steps. The
epoch's record in metrics.jsonl gets its ``compiled_steps``; summary.json gets the totals
(``summary``) and ``ended_compiled``; the run's closing notes say it in a sentence.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from fp.run import Run

#: run.state key of the counts (plain data: checkpointed with the plugin state)
STATE = "compile"


class Compiler:
    """Compiles a run's model afresh after every surgery and counts what ran compiled."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.backend_name = run.settings.experiment.compile_backend
        self.counts = run.state.setdefault(STATE, {"models": 0, "graphs": 0, "steps": 0,
                                                   "compiled_steps": 0, "eager_epochs": []})
        self.counts["backend"] = self.backend_name  # the one compiling from now on
        self._graph_calls = 0
        self._epoch_steps = self._epoch_compiled = 0

    def compile(self, model: nn.Module) -> Callable:
        """``model`` compiled afresh (dynamo's caches cleared first), as a forward that counts
        whether each call ran a compiled graph, and the model once it first runs."""
        torch.compiler.reset()
        compiled = torch.compile(model, backend=self._counting_backend, dynamic=False)
        first = [True]

        def forward(*args: Any, **kwargs: Any) -> Any:
            if first[0]:  # compiling is lazy: a model pruned after the last step is never compiled
                self.counts["models"] += 1
                first[0] = False
            before = self._graph_calls
            out = compiled(*args, **kwargs)
            self.counted_step(self._graph_calls > before)
            return out

        return forward

    def _counting_backend(self, graph: torch.fx.GraphModule, example_inputs: list) -> Callable:
        """The configured backend, with every call of the graph it compiles counted."""
        self.counts["graphs"] += 1
        compiled = torch._dynamo.lookup_backend(self.backend_name)(graph, example_inputs)

        def run_graph(*args: Any) -> Any:
            self._graph_calls += 1
            return compiled(*args)

        return run_graph

    def counted_step(self, ran_compiled: bool) -> None:
        self.counts["steps"] += 1
        self.counts["compiled_steps"] += int(ran_compiled)
        self._epoch_steps += 1
        self._epoch_compiled += int(ran_compiled)

    def end_epoch(self, epoch: int) -> int:
        """The steps of the epoch that ran compiled (from this process: a resumed epoch counts
        the steps after the resume); an epoch with eager steps is remembered."""
        compiled, steps = self._epoch_compiled, self._epoch_steps
        if compiled < steps:
            self.counts["eager_epochs"].append(epoch)
        self._epoch_steps = self._epoch_compiled = 0
        return compiled

    def summary(self) -> dict[str, Any]:
        """What summary.json says: the counts, and whether the last epoch ran compiled
        throughout."""
        counts = self.counts
        last = self.run.epoch
        ended = counts["steps"] > 0 and last not in counts["eager_epochs"]
        return {"backend": counts["backend"], "models_compiled": counts["models"],
                "graphs_compiled": counts["graphs"], "steps": counts["steps"],
                "compiled_steps": counts["compiled_steps"],
                "eager_epochs": list(counts["eager_epochs"]), "ended_compiled": ended}

    def note(self) -> str:
        """The summary as the sentence the run closes with."""
        s = self.summary()
        eager = s["steps"] - s["compiled_steps"]
        ran = (f"every one of its {s['steps']} steps ran compiled" if eager == 0 else
               f"{eager} of its {s['steps']} steps ran eagerly, in epochs "
               f"{', '.join(map(str, s['eager_epochs']))}")
        return (f"torch.compile ({s['backend']}) compiled the model {s['models_compiled']} "
                f"times ({s['graphs_compiled']} graphs); {ran}"
                f"{'' if s['ended_compiled'] else '; the run did not end compiled'}")


__all__ = ["Compiler", "STATE"]
