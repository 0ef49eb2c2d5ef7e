"""CloudFormation YAML as plain data: each short-form tag (`!Ref`, `!Sub`, `!GetAtt a.b`, …)
becomes its long form (`{"Ref": …}`, `{"Fn::Sub": …}`, `{"Fn::GetAtt": ["a", "b"]}`). Used by the
offline IAM check (dev/iam/roles.py) and by the stack's run of the template's Pipe
(dev/pipe_standin.py)."""
import yaml


class CfnLoader(yaml.SafeLoader):
    pass


def _tag(name):
    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if name == "GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {"Ref" if name == "Ref" else f"Fn::{name}": value}
    return construct


for _name in ("Ref", "Sub", "GetAtt", "If", "Join", "Equals", "Not", "And", "Or", "Condition",
              "Select", "Split", "FindInMap", "Base64", "ImportValue", "GetAZs"):
    CfnLoader.add_constructor(f"!{_name}", _tag(_name))
