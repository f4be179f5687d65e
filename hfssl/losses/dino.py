"""The DINO loss, its teacher-temperature schedule and its centre (Caron et al. 2021, "Emerging Properties in
Self-Supervised Vision Transformers", ICCV; reference code main_dino.py, `DINOLoss`).

Legend: G global crops (2), V all crops (G global then the local ones), B batch, K output dim (prototypes).

The teacher sees the G global crops, the student all V crops (`dino_loss`). Centring the teacher's outputs
(subtracting an EMA of their mean, all-reduced across processes) prevents one dimension from dominating; sharpening
(a low teacher temperature) prevents the uniform collapse. The functions are pure; `DINOLoss` holds the state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from hfssl.distributed import is_distributed, world_size


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """float16 / bfloat16 to float32 (softmax over K = 65536 outputs needs it); wider types unchanged."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def _stack(logits: Sequence[torch.Tensor] | torch.Tensor, name: str) -> torch.Tensor:
    """(N, B, K) from a list of N tensors (B, K) or a tensor (N, B, K); raise a ValueError saying why not."""
    if isinstance(logits, torch.Tensor):
        stacked = logits
    elif isinstance(logits, (list, tuple)) and logits and all(isinstance(t, torch.Tensor) for t in logits):
        shapes = {tuple(t.shape) for t in logits}
        if len(shapes) != 1:
            raise ValueError(f"{name} must all have one shape (B, K); received shapes {sorted(shapes)}.")
        stacked = torch.stack(list(logits))
    else:
        raise TypeError(
            f"{name} must be a tensor (N, B, K) or a non-empty list of tensors (B, K); got {type(logits).__name__}."
        )
    if stacked.ndim != 3:
        raise ValueError(f"{name} must have shape (N, B, K); received {tuple(stacked.shape)}.")
    return stacked


def teacher_probabilities(
    teacher_logits: torch.Tensor, center: torch.Tensor, teacher_temperature: float
) -> torch.Tensor:
    """softmax((teacher_logits - center) / teacher_temperature) over K, without gradient.

    Args:
        teacher_logits (`torch.Tensor` of shape `(..., K)`): the teacher's outputs.
        center (`torch.Tensor` of shape `(K,)` or `(1, K)`): the running centre.
        teacher_temperature (`float`): tau_t (DINO: 0.04, warmed up to 0.07 for ViT-S/16 long schedules).

    Returns:
        `torch.Tensor` of shape `(..., K)`, float32 or wider.
    """
    if teacher_temperature <= 0:
        raise ValueError(f"teacher_temperature={teacher_temperature} must be > 0 (DINO uses 0.04 -> 0.07).")
    logits = _at_least_float32(teacher_logits.detach())
    return F.softmax((logits - center.reshape(-1).to(logits.dtype)) / teacher_temperature, dim=-1)


def dino_loss(
    student_logits_per_crop: Sequence[torch.Tensor] | torch.Tensor,
    teacher_logits_per_global_crop: Sequence[torch.Tensor] | torch.Tensor,
    center: torch.Tensor,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
) -> torch.Tensor:
    """DINO's cross-entropy between teacher and student crops, as `DINOLoss.forward` of main_dino.py.

    loss = mean over pairs (i, v), v != i, of mean_b -sum_k p_t(i, b, k) log p_s(v, b, k), with
    p_t = softmax((t - center) / tau_t) (no gradient) and p_s = softmax(s / tau_s). Student crop i is the same
    global crop as teacher crop i (the first G student crops are the global ones).

    Args:
        student_logits_per_crop (`torch.Tensor` of shape `(V, B, K)` or list of V `(B, K)`): the student's
            outputs, global crops first.
        teacher_logits_per_global_crop (`torch.Tensor` of shape `(G, B, K)` or list of G `(B, K)`): the teacher's
            outputs on the global crops (treated as constants).
        center (`torch.Tensor` of shape `(K,)` or `(1, K)`): the centre subtracted from the teacher's outputs.
        student_temperature (`float`, defaults to 0.1): tau_s (DINO: 0.1).
        teacher_temperature (`float`, defaults to 0.04): tau_t (DINO: 0.04; see `teacher_temperature_schedule`).

    Returns:
        `torch.Tensor` (scalar): the mean over the G * V - G pairs (G * (V - 1) when V >= G) of the batch-mean
        cross-entropy, in nats (ln K for uniform outputs).
    """
    student = _stack(student_logits_per_crop, "student_logits_per_crop")
    teacher = _stack(teacher_logits_per_global_crop, "teacher_logits_per_global_crop")
    if student.shape[1:] != teacher.shape[1:]:
        raise ValueError(
            f"student (V, B, K) = {tuple(student.shape)} and teacher (G, B, K) = {tuple(teacher.shape)} must share "
            "B and K."
        )
    if student_temperature <= 0:
        raise ValueError(f"student_temperature={student_temperature} must be > 0 (DINO uses 0.1).")
    num_teacher, num_student = teacher.shape[0], student.shape[0]
    pairs = ~torch.eye(num_teacher, num_student, dtype=torch.bool, device=student.device)  # (G, V): v != i
    if not pairs.any():
        raise ValueError(f"dino_loss needs at least one pair of distinct crops; got G={num_teacher}, V={num_student}.")
    student_log_probabilities = F.log_softmax(_at_least_float32(student) / student_temperature, dim=-1)  # (V, B, K)
    targets = teacher_probabilities(teacher, center, teacher_temperature).to(student_log_probabilities.dtype)
    # cross_entropy[i, v] = mean_b -sum_k targets[i, b, k] * log p_s[v, b, k], in float32 even under autocast
    with torch.autocast(student.device.type, enabled=False):
        cross_entropy = -torch.einsum("gbk,vbk->gv", targets, student_log_probabilities) / student.shape[1]
    return cross_entropy[pairs].mean()


def teacher_temperature_schedule(step: int, warmup_steps: int, start: float = 0.04, end: float = 0.04) -> float:
    """The teacher temperature after `step` optimizer steps: `start + (end - start) * step / (warmup_steps - 1)` while
    `step < warmup_steps` (main_dino.py's `np.linspace(start, end, warmup_steps)`), then `end` (DINO: 0.04 -> 0.07
    over 30 epochs for long ViT runs; main_dino.py's defaults are 0.04 constant).

    Args:
        step (`int`): optimizer steps done (>= 0).
        warmup_steps (`int`): length of the warm-up; 0 gives `end` from the first step.
        start (`float`, defaults to 0.04): temperature at step 0 (`--warmup_teacher_temp`).
        end (`float`, defaults to 0.04): temperature after the warm-up (`--teacher_temp`).
    """
    if step < 0 or warmup_steps < 0:
        raise ValueError(f"step={step} and warmup_steps={warmup_steps} must be >= 0.")
    if step >= warmup_steps:
        return float(end)
    return float(start + (end - start) * step / max(warmup_steps - 1, 1))


@torch.no_grad()
def teacher_batch_center(teacher_output: torch.Tensor) -> torch.Tensor:
    """The mean of the teacher's outputs over the crops and the batch of every process (one all-reduce), so every
    process holds the same value (DINO's `dist.all_reduce(batch_center)` then division by `len * world_size`).

    Args:
        teacher_output (`torch.Tensor` of shape `(N, K)` or `(G, B, K)`): this process's teacher outputs; N must be
            equal on all processes.

    Returns:
        `torch.Tensor` of shape `(K,)`, float32 or wider: the global-batch mean.
    """
    output = _at_least_float32(teacher_output.detach().reshape(-1, teacher_output.shape[-1]))
    total = output.sum(dim=0)
    if is_distributed():
        dist.all_reduce(total)
    return total / (output.shape[0] * world_size())


@torch.no_grad()
def update_center(center: torch.Tensor, teacher_output: torch.Tensor, momentum: float = 0.9) -> torch.Tensor:
    """DINO's centre EMA: `center * momentum + batch_center * (1 - momentum)`, the batch centre all-reduced over
    processes (`teacher_batch_center`). Pure: returns a new tensor.

    Args:
        center (`torch.Tensor` of shape `(K,)` or `(1, K)`): the current centre.
        teacher_output (`torch.Tensor` of shape `(N, K)` or `(G, B, K)`): this step's teacher outputs.
        momentum (`float`, defaults to 0.9): DINO's `center_momentum`.

    Returns:
        `torch.Tensor` of the shape and dtype of `center`.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum={momentum} must lie in [0, 1] (DINO uses 0.9).")
    batch_center = teacher_batch_center(teacher_output).to(center.dtype).reshape(center.shape)
    return center * momentum + batch_center * (1.0 - momentum)


class DINOLoss(nn.Module):
    """The DINO loss with its state: the centre (an EMA of the teacher's mean output) and the step counter that
    drives the teacher-temperature warm-up, both buffers, so `state_dict()` and checkpoints carry them.

    `forward` changes nothing; call `update(teacher_logits)` once per optimizer step, after it (main_dino.py updates
    the centre right after the loss: the next forward sees the same centre either way). With gradient accumulation,
    pass the step's teacher outputs concatenated over the batch dimension, so the centre is that of the whole step.

    Args:
        output_dim (`int`, defaults to 65536): K, the head's output dimension (DINO's ViT default).
        student_temperature (`float`, defaults to 0.1): tau_s.
        teacher_temperature (`float`, defaults to 0.04): tau_t after the warm-up (paper: 0.04 -> 0.07 for long
            ViT runs).
        warmup_teacher_temperature (`float`, defaults to 0.04): tau_t at step 0.
        warmup_teacher_temperature_steps (`int`, defaults to 0): the linear warm-up's length in `update` calls
            (paper: 30 epochs).
        center_momentum (`float`, defaults to 0.9): the centre's EMA momentum.

    Shapes (legend above): `forward(student_logits_per_crop (V, B, K) or list of V (B, K),
    teacher_logits_per_global_crop (G, B, K) or list of G (B, K))` -> scalar; `center` (1, K); `step` () long.
    """

    def __init__(
        self,
        output_dim: int = 65536,
        student_temperature: float = 0.1,
        teacher_temperature: float = 0.04,
        warmup_teacher_temperature: float = 0.04,
        warmup_teacher_temperature_steps: int = 0,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if output_dim < 1:
            raise ValueError(f"output_dim={output_dim} must be >= 1: pass the DINO head's output dimension K.")
        for name, value in (("student_temperature", student_temperature), ("teacher_temperature", teacher_temperature),
                            ("warmup_teacher_temperature", warmup_teacher_temperature)):  # fmt: skip
            if value <= 0:
                raise ValueError(f"{name}={value} must be > 0 (DINO: tau_s 0.1, tau_t 0.04 -> 0.07).")
        if warmup_teacher_temperature_steps < 0:
            raise ValueError(
                f"warmup_teacher_temperature_steps={warmup_teacher_temperature_steps} must be >= 0 (0: no warm-up)."
            )
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum={center_momentum} must lie in [0, 1] (DINO uses 0.9).")
        self.output_dim = output_dim
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature
        self.warmup_teacher_temperature = warmup_teacher_temperature
        self.warmup_teacher_temperature_steps = warmup_teacher_temperature_steps
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, output_dim))
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def extra_repr(self) -> str:
        return (
            f"output_dim={self.output_dim}, student_temperature={self.student_temperature}, "
            f"teacher_temperature={self.warmup_teacher_temperature} -> {self.teacher_temperature} over "
            f"{self.warmup_teacher_temperature_steps} steps, center_momentum={self.center_momentum}"
        )

    def current_teacher_temperature(self) -> float:
        """tau_t at the current `step` (`teacher_temperature_schedule`)."""
        return teacher_temperature_schedule(
            int(self.step), self.warmup_teacher_temperature_steps, self.warmup_teacher_temperature,
            self.teacher_temperature,
        )  # fmt: skip

    def _stack_teacher(self, teacher_logits_per_global_crop: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        teacher = _stack(teacher_logits_per_global_crop, "teacher_logits_per_global_crop")
        if teacher.shape[-1] != self.output_dim:
            raise ValueError(
                f"teacher_logits_per_global_crop has K={teacher.shape[-1]} outputs but this DINOLoss was built with "
                f"output_dim={self.output_dim}; build it with output_dim={teacher.shape[-1]} (the head's output "
                "dimension)."
            )
        return teacher

    def forward(
        self,
        student_logits_per_crop: Sequence[torch.Tensor] | torch.Tensor,
        teacher_logits_per_global_crop: Sequence[torch.Tensor] | torch.Tensor,
    ) -> torch.Tensor:
        """`dino_loss` (shapes above: the student's crops, global first, and the teacher's global crops) with this
        module's centre, student temperature and current teacher temperature; a scalar, in nats."""
        teacher = self._stack_teacher(teacher_logits_per_global_crop)
        return dino_loss(
            student_logits_per_crop, teacher, self.center, self.student_temperature, self.current_teacher_temperature()
        )

    @torch.no_grad()
    def update(self, teacher_logits_per_global_crop: Sequence[torch.Tensor] | torch.Tensor) -> None:
        """After an optimizer step: the centre's EMA towards the mean of the step's teacher outputs (those given to
        `forward`, all-reduced across processes: `update_center`); then `step += 1`, the schedule's clock."""
        teacher = self._stack_teacher(teacher_logits_per_global_crop)
        self.center.copy_(update_center(self.center, teacher, self.center_momentum))
        self.step += 1
