# (section, title, why, code, fix)   code: body after the import line
H = "from choreo import At, Role, choreography\n\n"
E = []


def e(section, title, why, code, fix, header=H):
    E.append((section, title, why, header + code.strip("\n") + "\n", fix))


S = "The signature"
e(
    S,
    "a choreography cannot be `async def`",
    "Choreo generates the asynchronous endpoint code itself; the choreography is a plain function.",
    """
@choreography
async def hello(alice: Role) -> None:
    with alice:
        print("hi")
""",
    "Remove `async`.",
)
e(
    S,
    "a choreography cannot take *args or **kwargs",
    "Every role and input is a named parameter.",
    """
@choreography
def hello(alice: Role, *others: Role) -> None:
    with alice:
        print("hi")
""",
    "Declare each role as its own parameter.",
)
e(
    S,
    "parameter `x` needs an annotation",
    "The annotation says whether a parameter is a role or an input, and where an input lives.",
    """
@choreography
def hello(alice: Role, x) -> None:
    with alice:
        print("hi")
""",
    'Annotate it: `x: At[int, "alice"]`.',
)
e(
    S,
    "parameter `x` is neither a role nor a located input",
    "A plain type does not say which role holds the value.",
    """
@choreography
def hello(alice: Role, x: int) -> None:
    with alice:
        print("hi")
""",
    'Write `x: At[int, "alice"]`.',
)
e(
    S,
    "input `x` must name the role that holds it",
    "The second argument of `At` is the holder's parameter name, as a string.",
    """
@choreography
def hello(alice: Role, x: At[int, 0]) -> None:
    with alice:
        print("hi")
""",
    'Write `At[int, "alice"]`.',
)
e(
    S,
    "input `x` is located at `r`, which is not a role parameter",
    '`At[T, "r"]` must name one of the choreography\'s role parameters.',
    """
@choreography
def hello(alice: Role, x: At[int, "carol"]) -> None:
    with alice:
        print("hi")
""",
    "Fix the role name, or add the role as a parameter.",
)
e(
    S,
    "parameter `x` cannot have a default value",
    "Roles default to a role of their own name; inputs are given when the choreography is run.",
    """
@choreography
def hello(alice: Role, x: At[int, "alice"] = 3) -> None:
    with alice:
        print(x)
""",
    "Remove the default; pass the input to `choreo.run(...)` or the call.",
)
e(
    S,
    "the result is declared at `r`, which is not a role parameter",
    '`-> At[T, "r"]` must name a role parameter.',
    """
@choreography
def hello(alice: Role, x: At[int, "alice"]) -> At[int, "carol"]:
    return x
""",
    "Name the role that holds the result.",
)

S = "Statements at choreography level"
e(
    S,
    "unreachable code after `return`",
    "Nothing after a `return` runs.",
    """
@choreography
def hello(alice: Role, x: At[int, "alice"]) -> At[int, "alice"]:
    return x
    with alice:
        print("never")
""",
    "Remove the code, or move the `return` down.",
)
e(
    S,
    "`return` inside a loop is not supported in a choreography",
    "Every role must leave a loop at the same iteration, through its condition.",
    """
@choreography
def count(alice: Role, n: At[int, "alice"]) -> At[int, "alice"]:
    with alice:
        i = 0
    while i < n:
        with alice:
            i = i + 1
        return i
    return i
""",
    "Set a flag that the loop condition reads, and return after the loop.",
)
e(
    S,
    "`break` / `continue` is not supported at choreography level",
    "As for `return`: a loop is left through its condition, which the projector tells every role about.",
    """
@choreography
def count(alice: Role, n: At[int, "alice"]) -> None:
    with alice:
        i = 0
    while i < n:
        with alice:
            i = i + 1
        break
""",
    "Make the condition false instead (`break` inside a `with` block's own loop is fine).",
)
e(
    S,
    "`while ... else` / `for ... else` is not supported at choreography level",
    "",
    """
@choreography
def count(alice: Role) -> None:
    for i in range(3):
        with alice:
            print(i)
    else:
        with alice:
            print("done")
""",
    "Put the `else` body after the loop.",
)
e(
    S,
    "`async for` / `async with` is not allowed in a choreography",
    "They only parse inside `async def`, so that error comes too.",
    """
@choreography
async def ticks(alice: Role) -> None:
    async with alice:
        print("hi")
""",
    "Use `for` and `with role:` in a plain `def`.",
)
e(
    S,
    "a choreography-level `for` must bind plain names",
    "",
    """
SLOT = [0]


@choreography
def loop(alice: Role) -> None:
    for SLOT[0] in range(3):
        with alice:
            print("tick")
""",
    "Loop over plain names: `for i in range(3):`.",
)
e(
    S,
    "`try` is not supported at choreography level (it would span several roles)",
    "An exception at one role cannot be caught by another.",
    """
@choreography
def careful(alice: Role, x: At[int, "alice"]) -> None:
    try:
        with alice:
            print(1 / x)
    except ZeroDivisionError:
        pass
""",
    "Put the `try` inside `with alice:`.",
)
e(
    S,
    "a function / class cannot be defined at choreography level",
    "",
    """
@choreography
def helper_inside(alice: Role) -> None:
    def double(v: int) -> int:
        return 2 * v
""",
    "Define it at module level (every role can call it), or inside a `with role:` block.",
)
e(
    S,
    "`match` is not supported at choreography level",
    "The same message names any other statement the language has no rule for.",
    """
@choreography
def choose(alice: Role, x: At[int, "alice"]) -> None:
    match x:
        case _:
            with alice:
                print(x)
""",
    "Use `if`/`elif`, or put the `match` inside `with alice:`.",
)
e(
    S,
    "`global` / `nonlocal` is not allowed in a choreography",
    "Inside a function defined in a `with` block the message reads `` `global`/`nonlocal` is not allowed ``.",
    """
COUNT = 0


@choreography
def bump(alice: Role) -> None:
    global COUNT
    with alice:
        print(COUNT)
""",
    "Pass the value in as an input and return the new one.",
)
e(
    S,
    "imports are not allowed at choreography level",
    "",
    """
@choreography
def hello(alice: Role) -> None:
    import math
""",
    "Import at module level.",
)
e(
    S,
    "`raise` / `del` / `assert` is not supported at choreography level",
    "These are local code: they run at one role.",
    """
@choreography
def hello(alice: Role, x: At[int, "alice"]) -> None:
    n = 1
    assert n == 1
""",
    "Put it inside a `with role:` block.",
)
e(
    S,
    "`yield` / `await` is not allowed in a choreography",
    "A choreography is neither a generator nor a coroutine.",
    """
@choreography
def numbers(alice: Role) -> None:
    with alice:
        yield 1
""",
    "Collect the values and return them.",
)

S = "`with` blocks"
e(
    S,
    "`return` inside a `with` block would end only that role's part",
    "The other roles would go on expecting messages from a role that has returned.",
    """
@choreography
def early(alice: Role, bob: Role, x: At[int, "alice"]) -> At[int, "bob"]:
    with alice:
        if x < 0:
            return 0
    y = alice.send(x, to=bob)
    return y
""",
    "Bind the value inside the block and `return` it at choreography level; an early "
    "exit is an `if` at choreography level (the other roles are told).",
)

e(
    S,
    "`break` / `continue` inside a `with` block would leave a loop at that role only",
    "A choreography-level loop is left by every role together, through its condition.",
    """
@choreography
def escape(alice: Role, bob: Role, n: At[int, "alice"]) -> None:
    with alice:
        k = n
    while k > 0:
        with alice:
            k = k - 1
            if k == 3:
                break
        m = alice.send(k, to=bob)
""",
    "Fold the exit into the loop condition (`while k > 0 and not done:`), set at the "
    "deciding role. Loops *inside* the block may use `break` freely.",
)

e(
    S,
    "a `with` block runs at exactly one role",
    "",
    """
@choreography
def both(alice: Role, bob: Role) -> None:
    with alice, bob:
        print("hi")
""",
    "Write one `with role:` block per role.",
)
e(
    S,
    "`with b:` inside `with a:`: a block runs at one role",
    "",
    """
@choreography
def nested(alice: Role, bob: Role) -> None:
    with alice:
        with bob:
            print("hi")
""",
    "Close the `with alice:` block first.",
)
e(
    S,
    "only `with role:` blocks are allowed at choreography level",
    "",
    """
@choreography
def reads(alice: Role) -> None:
    with open("data.txt") as f:
        print(f.read())
""",
    "Put the `with open(...)` inside `with alice:`.",
)
e(
    S,
    "`r` is not a role parameter of this choreography",
    "Also reported for `to=r`.",
    """
@choreography
def hello(alice: Role) -> None:
    with carol:
        print("hi")
""",
    "Fix the name, or add `carol: Role` to the parameters.",
)
e(
    S,
    "`with role as name:` is only for groups of roles",
    "`as m` names the member running a group's block; a role is just itself.",
    """
@choreography
def hello(alice: Role) -> None:
    with alice as me:
        print("hi")
""",
    "Write `with alice:`.",
)
e(
    S,
    "`a.send` inside `with a:`: communication happens at choreography level",
    "",
    """
@choreography
def hello(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    with alice:
        y = alice.send(x, to=bob)
""",
    "Move the send out of the block: `y = alice.send(x, to=bob)` at choreography level.",
)

S = "Sends"
e(
    S,
    "`a.send(...)` must be a whole statement",
    "A send is a statement of its own (`x = a.send(e, to=b)`), not part of an expression.",
    """
@choreography
def hello(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    y = [alice.send(x, to=bob)]
""",
    "Bind the send to a name, then use the name.",
)
e(
    S,
    "the result of a send must be bound to one plain name",
    "",
    """
@choreography
def pair(alice: Role, bob: Role, p: At[tuple, "alice"]) -> None:
    a, b = alice.send(p, to=bob)
""",
    "Write `q = alice.send(p, to=bob)`, then unpack `q` inside `with bob:`.",
)
e(
    S,
    "`scatter` gives each member of a group its own part: `to=` must be one group",
    "A scatter sends `value[member]` to each member of a group; to one role it would be a send.",
    """
@choreography
def split(alice: Role, bob: Role, xs: At[list, "alice"]) -> None:
    y = alice.scatter(xs, to=bob)
""",
    "Use `send`, or scatter a dict `{member: part}` to a group.",
)
e(
    S,
    "roles have no method `m`",
    "",
    """
@choreography
def hello(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    y = alice.sned(x, to=bob)
""",
    "Use `alice.send(value, to=other)`.",
)
e(
    S,
    "`send` takes exactly one value to send / `send` needs its receiver as `to=`",
    "`alice.send(x, bob)` gets both.",
    """
@choreography
def hello(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    y = alice.send(x, bob)
""",
    "Write `alice.send(x, to=bob)`; send a tuple to send several values.",
)
e(
    S,
    "`send` has no parameter `k`",
    "",
    """
@choreography
def hello(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    y = alice.send(x, to=bob, priority=3)
""",
    "Remove it. A send takes `to=`; a gather (a group sending) also takes `quorum=` and "
    "`timeout=`; the deadline of every receive is set per run (`choreo.run(..., timeout=...)`).",
)
e(
    S,
    "`to=` must name a role or a list of roles / `r` is listed twice in `to=` / `to=` names no role",
    "",
    """
@choreography
def hello(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    a = alice.send(x, to="bob")
    b = alice.send(x, to=[bob, bob])
    c = alice.send(x, to=[])
""",
    "Write `to=bob` or `to=[bob, carol]`, each role once.",
)

S = "Groups"
GH = "from choreo import At, Role, Roles, choreography, majority\n\n"
e(
    S,
    "this condition reads `x`, a value each member of g holds for itself",
    "Names bound inside `with g as m:` (and what a scatter delivers) are faceted: one value per "
    "member. A branch decided on them could go one way at one member and the other way at another.",
    """
@choreography
def poll(leader: Role, workers: Roles) -> None:
    with workers as w:
        busy = w.endswith("0")
    if busy:
        with leader:
            print("busy")
""",
    "Gather the facets to one role and decide there (`b = workers.send(busy, to=leader)`, then "
    "`with leader: any_busy = any(b.values())`), or decide inside `with workers as w:`. A value "
    "multicast to the whole group (`k = leader.send(n, to=workers)`) is the same at every member "
    "and may decide.",
    header=GH,
)
e(
    S,
    "`quorum=` only applies when a group sends (a gather)",
    "A quorum says how many members' replies to wait for; one role sends one reply.",
    """
@choreography
def ask(leader: Role, workers: Roles, n: At[int, "leader"]) -> None:
    k = leader.send(n, to=workers, quorum=majority)
""",
    "Remove `quorum=`, or put it on the gather: `replies = workers.send(v, to=leader, quorum=majority)`.",
    header=GH,
)
e(
    S,
    "this is not a role expression the checker can decide",
    "Role expressions are a decidable subset of Python: a role, a group `g`, a member `g[0]` or "
    "`g[-1]` (a literal index), a slice `g[1:]` (literal bounds), or a `for` variable over a group "
    "(`for m in g:`, `for a, b in zip(g, g[1:]):`).",
    """
@choreography
def pick(leader: Role, workers: Roles, i: At[int, "leader"]) -> None:
    k = leader.send(i, to=workers[i])
""",
    "Loop over the group (`for m in workers:`) and test the index inside a `with` block, or "
    "scatter a dict with one entry per member.",
    header=GH,
)
e(
    S,
    "`to=` names members of group `g` twice",
    "Each receiver expression must name distinct members: two expressions over one group could "
    "name the same member twice.",
    """
@choreography
def two(leader: Role, workers: Roles, n: At[int, "leader"]) -> None:
    k = leader.send(n, to=[workers[0], workers[1]])
""",
    "Name a slice once (`to=workers[:2]`).",
    header=GH,
)
e(
    S,
    "group parameter `h` of `f` needs a group or a slice of one",
    "A sub-choreography's group parameter is bound to a group (or a slice of one) of the caller.",
    """
@choreography
def inner(a: Role, hs: Roles) -> None:
    with hs:
        print("hi")


@choreography
def outer(leader: Role, workers: Roles) -> None:
    inner(leader, leader)
""",
    "Pass `workers` or a slice such as `workers[1:]`.",
    header=GH,
)

S = "Sub-choreography calls"
e(
    S,
    "roles can only be passed to a `@choreography` function called by name",
    "",
    """
@choreography
def hello(p: Role) -> None:
    with p:
        print("hi")


TABLE = [hello]


@choreography
def main(alice: Role) -> None:
    TABLE[0](alice)
""",
    "Call it by name: `hello(alice)`.",
)
e(
    S,
    "`*`/`**` arguments are not supported in a sub-choreography call",
    "",
    """
@choreography
def hello(p: Role) -> None:
    with p:
        print("hi")


@choreography
def main(alice: Role) -> None:
    hello(alice, **{})
""",
    "Pass every argument explicitly.",
)
e(
    S,
    "`f` is not a `@choreography`: roles can only be passed to choreographies",
    "A call at choreography level that passes a role is a sub-choreography call.",
    """
def show(r: object) -> None:
    print(r)


@choreography
def main(alice: Role) -> None:
    show(alice)
""",
    "Decorate `show` with `@choreography`, or call it inside `with alice:` with values.",
)
e(
    S,
    "`f` calls itself (directly or not), so its result location must be declared",
    "The checker cannot infer a recursive choreography's result location.",
    """
@choreography
def ping(alice: Role, bob: Role, n: At[int, "alice"]):
    if n > 0:
        m = alice.send(n - 1, to=bob)
        ping(bob, alice, m)
    return n
""",
    'Annotate it: `-> At[int, "alice"]` (or `-> None`).',
)
e(
    S,
    "`f` takes N arguments, M given / `f` has no parameter `k` / parameter `p` of `f` is given twice / call of `f` is missing `p`",
    "",
    """
@choreography
def greet(p: Role, q: Role, msg: At[str, "p"]) -> At[str, "q"]:
    m = p.send(msg, to=q)
    return m


@choreography
def main(alice: Role, bob: Role, s: At[str, "alice"]) -> None:
    greet(alice, bob, s, alice)
    greet(alice, bob, msg=s, loud=alice)
    greet(alice, bob, s, p=alice)
    greet(alice, bob)
""",
    "Match the callee's parameters.",
)
e(
    S,
    "role parameter `p` of `f` needs a role, got `e` / role `r` is passed twice to `f`",
    "A sub-choreography's roles must be distinct roles of the caller.",
    """
@choreography
def greet(p: Role, q: Role, msg: At[str, "p"]) -> None:
    m = p.send(msg, to=q)


@choreography
def main(alice: Role, bob: Role, s: At[str, "alice"]) -> None:
    greet(alice, s, s)
    greet(alice, alice, s)
""",
    "Pass a different role parameter of the caller for each role parameter of the callee.",
)

S = "Locations"
e(
    S,
    "`x` is located at r, but ... runs at s",
    "Code at a role (a `with` block, a send's expression, a sub-choreography argument) reads a value another role holds.",
    """
@choreography
def hello(alice: Role, bob: Role, x: At[int, "alice"]) -> None:
    with bob:
        print(x + 1)
""",
    "Send it first, as the hint says: `x = alice.send(x, to=bob)`.",
)
e(
    S,
    "`x` is not held by any single role here",
    "Two branches (or loop iterations) bind the name at different roles.",
    """
@choreography
def hello(alice: Role, bob: Role, c: At[bool, "alice"]) -> None:
    if c:
        with alice:
            v = 1
    else:
        with bob:
            v = 2
    with alice:
        print(v)
""",
    "Bind it at the same role on every path (send it there in the other branch).",
)
e(
    S,
    "`x` is not available here: it is not bound on every path that reaches this point",
    "",
    """
@choreography
def hello(alice: Role, c: At[bool, "alice"]) -> None:
    if c:
        with alice:
            v = 1
    with alice:
        print(v)
""",
    "Bind it before the `if`, or in every branch.",
)
e(
    S,
    "name `x` is not defined",
    "Not bound in the choreography, and not a module global or builtin.",
    """
@choreography
def hello(alice: Role) -> None:
    with alice:
        print(nope)
""",
    "Define it.",
)
e(
    S,
    "this condition mixes values located at different roles",
    "An `if`/`elif`/`while` condition is decided at one role (or at roles that got the same value by multicast).",
    """
@choreography
def hello(alice: Role, bob: Role, x: At[int, "alice"], y: At[int, "bob"]) -> None:
    if x < y:
        with alice:
            print("less")
""",
    "Send one value to the other role first, as the hint says.",
)
e(
    S,
    "`x` is located at r; a plain statement outside `with` may only use values every role knows",
    "A statement outside `with` runs at every role. The same rule holds for a `for` loop's iterable.",
    """
@choreography
def hello(alice: Role, x: At[int, "alice"]) -> None:
    y = x + 1
""",
    "Wrap it in `with alice:`.",
)
e(
    S,
    "a plain statement inside a branch or loop decided at one role: not every role knows whether it ran",
    "",
    """
@choreography
def hello(alice: Role, x: At[int, "alice"]) -> None:
    if x > 0:
        n = 1
""",
    "Put it inside a `with role:` block.",
)
e(
    S,
    "a plain statement outside `with` that binds nothing would run at every role",
    "",
    """
@choreography
def hello(alice: Role) -> None:
    print("hi")
""",
    "Put it inside `with alice:`.",
)
e(
    S,
    "role `r` is used as a value",
    "Roles only appear in `with`, `.send(...)`, `to=` and sub-choreography calls.",
    """
@choreography
def hello(alice: Role, bob: Role) -> None:
    with alice:
        print(bob)
""",
    'Use a string: `print("bob")`.',
)
e(
    S,
    "`r` is a role and cannot be assigned to",
    "",
    """
@choreography
def hello(alice: Role) -> None:
    alice = 3
""",
    "Use another name.",
)
e(
    S,
    "`x` is held by r and s; changing it in place at r would make their copies differ",
    "After a multicast every receiver has its own copy; a central run shares one object.",
    """
@choreography
def hello(alice: Role, bob: Role, carol: Role, xs: At[list, "alice"]) -> None:
    ys = alice.send(xs, to=[bob, carol])
    with bob:
        ys.append(1)
""",
    "Change a copy, or rebind (`ys = ys + [1]` makes `ys` bob's alone).",
)
e(
    S,
    "this returns a value located at r, but the choreography declares its result at s",
    "",
    """
@choreography
def hello(alice: Role, bob: Role, x: At[int, "alice"]) -> At[int, "bob"]:
    return x
""",
    "Send it first: `y = alice.send(x, to=bob)`, then `return y`.",
)
