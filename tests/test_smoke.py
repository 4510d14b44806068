"""The shortest end-to-end path: a file made on one peer appears, byte for byte, on the other."""

from conftest import tree


def test_a_file_flows_from_one_peer_to_the_other(peers):
    alice, bob = peers
    alice.write("hello.txt", "hi")
    alice.sync()
    bob.sync()
    assert tree(bob.store) == tree(alice.store) == {"hello.txt": b"hi"}
