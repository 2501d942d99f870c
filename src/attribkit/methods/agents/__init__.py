"""Judge-free failure-attribution methods over multi-agent logs (task kind ``"agents"``), one
file per method: turn ablation (``turn_loo``), the prefix curve (``prefix_drop``), agent-level
Shapley values (``agent_shapley``) and a backtrace over an influence graph of turns
(``backtrace``). They value subsets of turns through :meth:`AgentTask.values` (log p(outcome |
kept turns)); the generic perturbation methods run on an AgentTask too."""
