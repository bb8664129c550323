"""A budget measure for the toy app: any function of the composed config."""


def x_squared(cfg) -> int:
    return int(cfg.x) ** 2
