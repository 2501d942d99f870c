"""Leave-one-token-out occlusion for generated text: replace one column's tokens by the pad token."""

from __future__ import annotations

import numpy as np
import torch

from attribkit.core.attribution import Attribution
from attribkit.methods.generation.common import count, metered
from attribkit.tasks.generation import GenerationTask

__all__ = ["occlusion"]


def occlusion(task: GenerationTask, *, batch_size: int = 16) -> Attribution:
    """Leave-one-token-out: f_t(input) − f_t(input with column j's tokens replaced by the pad
    token). Positions stay put, so one occluded pass gives every row. Costs columns + 1 forward
    passes, batched."""
    ids = torch.tensor(task.ids, device=task.lm.device)
    pos_unit = torch.tensor(task.position_unit, device=ids.device)
    seqs = [ids] + [torch.where(pos_unit == u, task.lm.pad_id, ids) for u in range(task.n_units)]
    with metered(task) as cost:
        outs = []
        for start in range(0, len(seqs), batch_size):
            chunk = torch.stack(seqs[start : start + batch_size])
            outs.append(task.forward_ids(chunk))
            count(task, len(chunk))
        vals = torch.cat(outs).double().cpu().numpy()  # (1 + columns, rows)
    scores = vals[0][:, None] - vals[1:].T
    scores[~task.visible()] = np.nan
    return task.result(scores, "occlusion", {}, cost)
