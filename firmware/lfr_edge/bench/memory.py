from lfr_edge.bench.common import BenchContext, PartResult, not_measured


def run(ctx: BenchContext) -> PartResult:
    return not_measured("memory", "todo")
