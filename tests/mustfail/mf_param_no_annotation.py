"""Every parameter is a role or a located input, so it needs an annotation."""

from choreo import Role, choreography


@choreography
def no_annotation(alice: Role, x) -> None:  # error: parameter `x` needs an annotation
    with alice:
        print("hi")
