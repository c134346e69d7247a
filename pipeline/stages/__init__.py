"""The stages of a run (``run``: check -> data -> model -> method -> train -> evaluate -> rlhf -> report -> publish),
the config resolved once before them (``resolve``), the cross-field and machine checks (``check``) and the
evaluation (``evaluate``). Commands (pipeline/commands/) start them; the layers below never import them."""
