# TEMPORARY local placeholder until the cri-events branch is merged (not committed).
class ContainerdEvents:
    name = "events"
    def __init__(self, *a, **k): raise NotImplementedError
