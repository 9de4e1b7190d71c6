"""Karatsuba multiplication as a recursive choreography with rotating roles.

Three roles share the work: at every level the caller ``a`` splits the
numbers, and the three half-size products are computed by recursive calls in
which the roles are passed in a different order (role polymorphism), so every
role takes every part in turn.

Run: ``choreo up examples/03_karatsuba.py:karatsuba --input x=1234567 --input y=7654321``
"""

from choreo import At, Role, choreography


@choreography
def karatsuba(a: Role, b: Role, c: Role, x: At[int, "a"], y: At[int, "a"]) -> At[int, "a"]:
    with a:
        small = x < 10 or y < 10
    if small:
        with a:
            product = x * y
        return product
    with a:
        half = max(len(str(x)), len(str(y))) // 2
        base = 10**half
        x1, x0 = divmod(x, base)
        y1, y0 = divmod(y, base)
        xs, ys = x1 + x0, y1 + y0
    bx = a.send(x0, to=b)
    by = a.send(y0, to=b)
    z0_at_b = karatsuba(b, c, a, bx, by)
    z0 = b.send(z0_at_b, to=a)
    cx = a.send(x1, to=c)
    cy = a.send(y1, to=c)
    z2_at_c = karatsuba(c, a, b, cx, cy)
    z2 = c.send(z2_at_c, to=a)
    z1 = karatsuba(a, b, c, xs, ys)
    with a:
        product = z2 * base * base + (z1 - z2 - z0) * base + z0
    return product
