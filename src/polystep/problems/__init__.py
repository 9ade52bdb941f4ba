"""Problem suites for PolyStep (MAX-SAT, RL policy search)."""
