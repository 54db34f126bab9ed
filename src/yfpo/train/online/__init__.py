"""Online-RL methods on the GRPO stage (`yfpo grpo`, `trainer: grpo` in `yfpo run`), each as pure functions plus the
small amount of state it needs, hooked into `yfpo.train.grpo.NeuronGRPOTrainer`:

- `pacs`  (loss_type: pacs): implicit actor-critic coupling via supervised learning (Li et al. 2025, ritzz-ai/PACS).
- `oreal` (loss_type: oreal): outcome-reward RL, BC on positives + reshaped negatives + token weights (Lyu et al.
  2025, InternLM/OREAL).
- `merci` (intrinsic: merci): count-based intrinsic reward from a Coin Flipping Network (Zhang et al. 2025).
- `rlpt`  (mode: rlpt): next-segment reasoning on pre-training text with a generative judge (Li et al. 2025).
- `groups`: the group arithmetic they share (RLOO / GRPO baselines over group ids, not over reshapes, because TRL
  shuffles a generation batch before splitting it).
- `rollout`: rollouts through yfpo.engine instead of TRL's model.generate.
"""
