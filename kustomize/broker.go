package kustomize

import (
	"fmt"
	"path"
	"slices"

	mcnetv1 "github.com/mcnet-io/mcnet/api/v1alpha1"
	"github.com/mcnet-io/mcnet/internal/naming"
)

// BrokerServiceAccount is the name of the ServiceAccount in the broker namespace whose
// credentials a cluster uses on the broker (naming.BrokerServiceAccount, the convention
// the controller and the admission policy share).
func BrokerServiceAccount(cluster string) string { return naming.BrokerServiceAccount(cluster) }

// brokerPolicyName names the admission policy that keeps each cluster to its own objects.
const brokerPolicyName = "mcnet-broker-one-writer"

// renderBroker writes broker/: the broker namespace (applied on the broker cluster
// only), the admission policies that keep each cluster to its own objects and its
// allocation, and one identity (ServiceAccount, Role, RoleBinding) per cluster. No
// credential is rendered: tokens are minted by `kubectl mcnet broker credentials`.
func renderBroker(t Tree, cs *mcnetv1.ClusterSet, clusters []mcnetv1.ClusterSpec) error {
	ns := cs.Spec.Broker.Namespace
	// kustomize applies only the files its resources list names, so the list grows
	// with each file written and a stray file in the directory is never applied.
	resources := []string{"namespace.yaml", "policy.yaml"}
	if err := t.putYAML(path.Join(DirBroker, "namespace.yaml"), "", map[string]any{
		"apiVersion": "v1",
		"kind":       "Namespace",
		"metadata": map[string]any{
			"name":   ns,
			"labels": map[string]string{"app.kubernetes.io/part-of": "mcnet", "mcnet.io/broker": "true"},
		},
	}); err != nil {
		return err
	}
	if err := t.putYAML(path.Join(DirBroker, "policy.yaml"),
		"# RBAC cannot limit create/update/delete to one cluster's objects, so this policy does:\n"+
			"# a cluster's broker identity may only write objects labelled with its own name, and\n"+
			"# the broker cluster's own mcnet components write here only through that identity.\n",
		append(brokerPolicy(ns), localComponentsPolicy(ns)...)...); err != nil {
		return err
	}
	resources = append(resources, "allocation.yaml")
	if err := t.putYAML(path.Join(DirBroker, "allocation.yaml"),
		"# What a cluster writes must fit what the fleet table (Fleet "+cs.Name+", applied with every\n"+
			"# cluster's overlay) allocates to it: its own name and clusterID, subnets and addresses\n"+
			"# inside its own networks, exports under its own name. Without the table, cluster\n"+
			"# identities can write nothing.\n",
		allocationPolicies(ns, cs.Name)...); err != nil {
		return err
	}
	// One file per cluster: a cluster taken out of the fleet is no longer rendered, so
	// Write removes its file and GitOps pruning its identity, with all its access.
	for _, c := range clusters {
		f := "cluster-" + c.Name + ".yaml"
		resources = append(resources, f)
		if err := t.putYAML(path.Join(DirBroker, f),
			fmt.Sprintf("# Cluster %s's identity on the broker. Its token is minted out of band\n# (kubectl mcnet broker credentials --cluster %s) and never stored in Git.\n", c.Name, c.Name),
			brokerIdentity(ns, c.Name)...); err != nil {
			return err
		}
	}
	return t.putYAML(path.Join(DirBroker, "kustomization.yaml"),
		fmt.Sprintf("# The broker: a namespace on cluster %s's API server, no pods. Needs the CRDs in ../%s.\n", cs.Spec.Broker.Cluster, DirCRDs),
		kustomization(map[string]any{"resources": resources}))
}

// brokerRules is what a cluster's controller needs on the broker: publish and withdraw its
// own Cluster, Endpoint, ServiceImports and EndpointSlices, and watch everyone else's.
// Secrets are deliberately absent. The write verbs cover every object of a kind: RBAC
// cannot narrow them to a cluster's own objects, which is what brokerPolicy is for;
// delete is how a cluster withdraws what it published.
var brokerRules = []any{
	map[string]any{
		"apiGroups": []string{"mcnet.io"},
		"resources": []string{"clusters", "endpoints"},
		"verbs":     []string{"get", "list", "watch", "create", "update", "patch", "delete"},
	},
	map[string]any{
		"apiGroups": []string{"multicluster.x-k8s.io"},
		"resources": []string{"serviceimports"},
		"verbs":     []string{"get", "list", "watch", "create", "update", "patch", "delete"},
	},
	map[string]any{
		"apiGroups": []string{"discovery.k8s.io"},
		"resources": []string{"endpointslices"},
		"verbs":     []string{"get", "list", "watch", "create", "update", "patch", "delete"},
	},
}

// brokerIdentity is one member's ServiceAccount on the broker, with a Role and
// binding of its own rather than one shared ClusterRole: deleting the cluster's
// file takes all of its access away, and nothing it holds names another cluster.
func brokerIdentity(ns, cluster string) []any {
	name := BrokerServiceAccount(cluster)
	labels := map[string]string{"app.kubernetes.io/part-of": "mcnet", mcnetv1.ClusterLabel: cluster}
	// The three objects share name and labels: a cluster's whole access to the broker
	// is found, or audited, by one name or one label selector.
	meta := map[string]any{"name": name, "namespace": ns, "labels": labels}
	return []any{
		map[string]any{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
		map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta, "rules": append(slices.Clone(brokerRules),
			// Its own ServiceAccount owns what it publishes, so removing the cluster from
			// the fleet garbage-collects its objects on the broker.
			map[string]any{
				"apiGroups":     []string{""},
				"resources":     []string{"serviceaccounts"},
				"resourceNames": []string{name},
				"verbs":         []string{"get"},
			})},
		map[string]any{
			"apiVersion": "rbac.authorization.k8s.io/v1",
			"kind":       "RoleBinding",
			"metadata":   meta,
			"roleRef":    map[string]string{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
			"subjects":   []any{map[string]string{"kind": "ServiceAccount", "name": name, "namespace": ns}},
		},
	}
}

// localComponentsPolicyName names the policy that keeps the broker cluster's own mcnet
// components out of the broker namespace.
const localComponentsPolicyName = "mcnet-broker-own-identity"

// localComponentsPolicy refuses every write in the broker namespace by the ServiceAccounts
// mcnet's components run as in their own cluster. On the broker's cluster they hold
// cluster-wide rights on the kinds the broker carries; with this policy they write there
// only through their cluster's broker identity, as every other member does, and are held
// to the same policies.
func localComponentsPolicy(ns string) []any {
	// Every ServiceAccount of mcnet's own namespace: the controller, gateway,
	// route agent and DNS server alike.
	prefix := "system:serviceaccount:" + mcnetv1.SystemNamespace + ":"
	labels := map[string]string{"app.kubernetes.io/part-of": "mcnet"}
	rule := func(group string, resources ...string) map[string]any {
		return map[string]any{
			"apiGroups": []string{group}, "apiVersions": []string{"*"},
			"operations": []string{"CREATE", "UPDATE", "DELETE"}, "resources": resources,
		}
	}
	return []any{
		map[string]any{
			"apiVersion": "admissionregistration.k8s.io/v1",
			"kind":       "ValidatingAdmissionPolicy",
			"metadata":   map[string]any{"name": localComponentsPolicyName, "labels": labels},
			"spec": map[string]any{
				"failurePolicy": "Fail",
				"matchConstraints": map[string]any{"resourceRules": []any{
					rule("mcnet.io", "clusters", "endpoints"),
					rule("multicluster.x-k8s.io", "serviceimports"),
					rule("discovery.k8s.io", "endpointslices"),
				}},
				"matchConditions": []any{map[string]any{
					"name":       "local-mcnet-component",
					"expression": fmt.Sprintf("request.userInfo.username.startsWith('%s')", prefix),
				}},
				// Whoever matched is refused: the policy's whole job is the
				// match condition above.
				"validations": []any{map[string]any{
					"expression":        "false",
					"messageExpression": fmt.Sprintf("request.userInfo.username + ' may not write in the broker namespace; mcnet components write there only with their cluster\\'s broker identity (%s<cluster>)'", naming.BrokerServiceAccountPrefix),
					"reason":            "Forbidden",
				}},
			},
		},
		map[string]any{
			"apiVersion": "admissionregistration.k8s.io/v1",
			"kind":       "ValidatingAdmissionPolicyBinding",
			"metadata":   map[string]any{"name": localComponentsPolicyName, "labels": labels},
			// Bound to the broker namespace only: everywhere else on their cluster the
			// components keep what their own RBAC grants them.
			"spec": map[string]any{
				"policyName":        localComponentsPolicyName,
				"validationActions": []string{"Deny"},
				"matchResources": map[string]any{"namespaceSelector": map[string]any{
					"matchLabels": map[string]string{"kubernetes.io/metadata.name": ns},
				}},
			},
		},
	}
}

// brokerPolicy is the one-writer rule, in CEL: a cluster identity creates only
// objects labelled with its own name (checked on the new object) and changes or
// deletes only objects already labelled so (checked on the old one), so it can
// neither write as another cluster nor relabel another cluster's objects.
func brokerPolicy(ns string) []any {
	prefix := "system:serviceaccount:" + ns + ":" + naming.BrokerServiceAccountPrefix
	label := fmt.Sprintf("'%s'", mcnetv1.ClusterLabel)
	// owns is the CEL test that obj carries this writer's cluster label.
	owns := func(obj string) string {
		return fmt.Sprintf("has(%[1]s.metadata.labels) && %[2]s in %[1]s.metadata.labels && %[1]s.metadata.labels[%[2]s] == variables.cluster", obj, label)
	}
	rule := func(group string, resources ...string) map[string]any {
		return map[string]any{
			"apiGroups":   []string{group},
			"apiVersions": []string{"*"},
			"operations":  []string{"CREATE", "UPDATE", "DELETE"},
			"resources":   resources,
		}
	}
	return []any{
		map[string]any{
			"apiVersion": "admissionregistration.k8s.io/v1",
			"kind":       "ValidatingAdmissionPolicy",
			"metadata":   map[string]any{"name": brokerPolicyName, "labels": map[string]string{"app.kubernetes.io/part-of": "mcnet"}},
			"spec": map[string]any{
				"failurePolicy": "Fail",
				"matchConstraints": map[string]any{
					"resourceRules": []any{
						rule("mcnet.io", "clusters", "endpoints"),
						rule("multicluster.x-k8s.io", "serviceimports"),
						rule("discovery.k8s.io", "endpointslices"),
					},
				},
				// Only cluster identities are held to the rule; admins and GitOps are not.
				"matchConditions": []any{map[string]any{
					"name":       "cluster-identity",
					"expression": fmt.Sprintf("request.userInfo.username.startsWith('%s')", prefix),
				}},
				"variables": []any{map[string]any{
					"name":       "cluster",
					"expression": fmt.Sprintf("request.userInfo.username.substring(%d)", len(prefix)),
				}},
				"validations": []any{
					// A DELETE has no new object; its check is the next one.
					map[string]any{
						"expression":        "request.operation == 'DELETE' || (" + owns("object") + ")",
						"messageExpression": fmt.Sprintf("'cluster ' + variables.cluster + ' may only write objects labelled %s=' + variables.cluster", mcnetv1.ClusterLabel),
						"reason":            "Forbidden",
					},
					// A CREATE has no old object; the rule above covers it.
					map[string]any{
						"expression":        "request.operation == 'CREATE' || (" + owns("oldObject") + ")",
						"messageExpression": "'cluster ' + variables.cluster + ' may not change or delete another cluster\\'s objects'",
						"reason":            "Forbidden",
					},
				},
			},
		},
		map[string]any{
			"apiVersion": "admissionregistration.k8s.io/v1",
			"kind":       "ValidatingAdmissionPolicyBinding",
			"metadata":   map[string]any{"name": brokerPolicyName, "labels": map[string]string{"app.kubernetes.io/part-of": "mcnet"}},
			// Deny, not Warn or Audit: a write the rule refuses must fail, or a cluster
			// could still publish as another and only a log would say so.
			"spec": map[string]any{
				"policyName":        brokerPolicyName,
				"validationActions": []string{"Deny"},
				"matchResources": map[string]any{
					"namespaceSelector": map[string]any{
						"matchLabels": map[string]string{"kubernetes.io/metadata.name": ns},
					},
				},
			},
		},
	}
}
