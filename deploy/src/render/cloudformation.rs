//! CloudFormation for AWS: the queues (with dead-letter redrive), topics (SNS, with their SQS
//! subscriptions and the queue policies letting them send), buckets and tables the
//! manifest declares, an IAM role for the proxies scoped to exactly those resources, and, for
//! the `vms` affinity, a launch template and auto scaling group whose instances install and start
//! the rendered systemd proxy units.

use ekv::services::dynamodb::{PARTITION_KEY, SORT_KEY, TTL_ATTRIBUTE};
use serde_json::{Map, Value, json};

use crate::{
    manifest::ProviderKind,
    manifest::{Affinity, Manifest},
    render::{Files, ProxyHost, boot_script, credential_env_of, proxy_image, sidecars},
};

/// Logical ids are alphanumeric: `orders-dead` → `OrdersDead`.
fn logical(prefix: &str, name: &str) -> String {
    let mut id = prefix.to_owned();
    for part in name.split('-') {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            id.extend(first.to_uppercase());
            id.push_str(chars.as_str());
        }
    }
    id
}

/// Physical names carry the app name, so several apps share an account without clashes.
fn physical(m: &Manifest, name: &str) -> String {
    format!("{}-{name}", m.name)
}

fn skip(checks: &[(&str, &str)]) -> Value {
    json!({ "checkov": { "skip": checks.iter().map(|(id, why)| json!({ "id": id, "comment": why })).collect::<Vec<_>>() } })
}

/// Renders `cloudformation/template.json`.
pub fn render(m: &Manifest) -> Files {
    let mut resources = Map::new();
    let mut queue_arns = Vec::new();
    for q in &m.queues {
        let mut props = json!({
            "QueueName": physical(m, &q.name),
            "MessageRetentionPeriod": 345_600,
            "SqsManagedSseEnabled": true,
        });
        if let Some(v) = q.visibility_timeout {
            props["VisibilityTimeout"] = json!(v);
        }
        if let (Some(dlq), Some(n)) = (&q.dead_letter, q.max_receives) {
            props["RedrivePolicy"] = json!({ "deadLetterTargetArn": { "Fn::GetAtt": [logical("Queue", dlq), "Arn"] }, "maxReceiveCount": n });
        }
        // The name of each subscription into this queue, where eqs's sqs backend keeps it.
        let tags: Vec<Value> = m
            .topics
            .iter()
            .flat_map(|topic| topic.subscriptions.iter().map(move |s| (topic, s)))
            .filter(|(_, s)| s.queue == q.name)
            .map(|(topic, s)| json!({ "Key": format!("exo-subscription:{}", topic.name), "Value": format!("{} 0", s.name) }))
            .collect();
        if !tags.is_empty() {
            props["Tags"] = json!(tags);
        }
        let id = logical("Queue", &q.name);
        queue_arns.push(json!({ "Fn::GetAtt": [id, "Arn"] }));
        resources.insert(
            id,
            json!({
                "Type": "AWS::SQS::Queue",
                "Properties": props,
                "Metadata": skip(&[("CKV_AWS_27", "encrypted at rest with SQS-managed keys (SqsManagedSseEnabled); a customer KMS key is an operator choice")]),
            }),
        );
    }
    // Topics: an SNS topic each, an SQS subscription with raw delivery per subscription (its
    // filter as the filter policy eqs would write), and a queue policy letting the topics send.
    let mut topic_arns = Vec::new();
    let mut senders: std::collections::BTreeMap<&str, Vec<Value>> = std::collections::BTreeMap::new();
    for topic in &m.topics {
        let id = logical("Topic", &topic.name);
        topic_arns.push(json!({ "Ref": id }));
        resources.insert(
            id.clone(),
            json!({
                "Type": "AWS::SNS::Topic",
                "Properties": {
                    "TopicName": physical(m, &topic.name),
                    "KmsMasterKeyId": "alias/aws/sns",
                    "Tags": [{ "Key": "exoflow:topic", "Value": topic.name }, { "Key": "exoflow:app", "Value": m.name }],
                },
            }),
        );
        for s in &topic.subscriptions {
            let mut props = json!({
                "TopicArn": { "Ref": id },
                "Protocol": "sqs",
                "Endpoint": { "Fn::GetAtt": [logical("Queue", &s.queue), "Arn"] },
                "RawMessageDelivery": true,
            });
            let policy = eqs::filter::Filter::parse(s.filter.as_deref().unwrap_or_default())
                .ok()
                .and_then(|f| f.sns_policy());
            if let Some(policy) = policy {
                props["FilterPolicyScope"] = json!("MessageAttributes");
                props["FilterPolicy"] = policy;
            }
            resources.insert(
                logical("Subscription", &format!("{}-{}", topic.name, s.name)),
                json!({ "Type": "AWS::SNS::Subscription", "Properties": props }),
            );
            senders.entry(s.queue.as_str()).or_default().push(json!({ "Ref": id }));
        }
    }
    for (queue, topics) in senders {
        let queue_id = logical("Queue", queue);
        resources.insert(
            logical("QueuePolicy", queue),
            json!({
                "Type": "AWS::SQS::QueuePolicy",
                "Properties": {
                    "Queues": [{ "Ref": queue_id }],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [{
                            "Sid": "exo-topics",
                            "Effect": "Allow",
                            "Principal": { "Service": "sns.amazonaws.com" },
                            "Action": "sqs:SendMessage",
                            "Resource": { "Fn::GetAtt": [queue_id, "Arn"] },
                            "Condition": { "ArnEquals": { "aws:SourceArn": topics } },
                        }],
                    },
                },
            }),
        );
    }
    let mut bucket_arns = Vec::new();
    for b in &m.buckets {
        let id = logical("Bucket", &b.name);
        bucket_arns.push(json!({ "Fn::GetAtt": [id, "Arn"] }));
        bucket_arns.push(json!({ "Fn::Sub": format!("${{{id}.Arn}}/*") }));
        resources.insert(
            id,
            json!({
                "Type": "AWS::S3::Bucket",
                "DeletionPolicy": "Retain",
                "UpdateReplacePolicy": "Retain",
                "Properties": {
                    // A fixed name, so eos finds it (name-prefix `<app>-`); S3 names are global.
                    "BucketName": physical(m, &b.name),
                    "BucketEncryption": { "ServerSideEncryptionConfiguration": [{ "ServerSideEncryptionByDefault": { "SSEAlgorithm": "AES256" } }] },
                    "PublicAccessBlockConfiguration": {
                        "BlockPublicAcls": true, "BlockPublicPolicy": true, "IgnorePublicAcls": true, "RestrictPublicBuckets": true,
                    },
                    "OwnershipControls": { "Rules": [{ "ObjectOwnership": "BucketOwnerEnforced" }] },
                    "VersioningConfiguration": { "Status": "Enabled" },
                    "Tags": [{ "Key": "exoflow:bucket", "Value": b.name }, { "Key": "exoflow:app", "Value": m.name }],
                },
                "Metadata": skip(&[
                    ("CKV_AWS_18", "access logging needs a log bucket the operator owns; not created per app"),
                    ("CKV_AWS_144", "cross-region replication is a disaster-recovery decision outside the app manifest"),
                    ("CKV_AWS_145", "encrypted with S3-managed keys (AES256); a customer KMS key is an operator choice"),
                ]),
            }),
        );
    }
    let mut table_arns = Vec::new();
    for t in &m.tables {
        let id = logical("Table", &t.name);
        table_arns.push(json!({ "Fn::GetAtt": [id, "Arn"] }));
        let mut props = json!({
            "TableName": physical(m, &t.name),
            "BillingMode": "PAY_PER_REQUEST",
            // The layout ekv's dynamodb backend reads and writes (one ordered partition).
            "AttributeDefinitions": [
                { "AttributeName": PARTITION_KEY, "AttributeType": "S" },
                { "AttributeName": SORT_KEY, "AttributeType": "S" },
            ],
            "KeySchema": [
                { "AttributeName": PARTITION_KEY, "KeyType": "HASH" },
                { "AttributeName": SORT_KEY, "KeyType": "RANGE" },
            ],
            "PointInTimeRecoverySpecification": { "PointInTimeRecoveryEnabled": true },
            "SSESpecification": { "SSEEnabled": true },
        });
        // Expired entries are never served (ekv checks expiry itself); DynamoDB's TTL removes
        // them from storage, as on tables ekv creates.
        props["TimeToLiveSpecification"] = json!({ "AttributeName": TTL_ATTRIBUTE, "Enabled": true });
        resources.insert(
            id,
            json!({
                "Type": "AWS::DynamoDB::Table",
                "DeletionPolicy": "Retain",
                "UpdateReplacePolicy": "Retain",
                "Properties": props,
                "Metadata": skip(&[("CKV_AWS_119", "encrypted with an AWS-owned/managed key (SSEEnabled); a customer KMS key is an operator choice")]),
            }),
        );
    }

    let mut statements = Vec::new();
    if !queue_arns.is_empty() {
        statements.push(json!({
            "Sid": "Queues", "Effect": "Allow",
            "Action": ["sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                       "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:PurgeQueue"],
            "Resource": queue_arns,
        }));
    }
    if !queue_arns.is_empty() {
        // eqs lists queues to sample their depth (the autoscaling metric); SQS has no
        // resource-level permission for listing.
        statements.push(json!({
            "Sid": "ListQueues", "Effect": "Allow", "Action": ["sqs:ListQueues"], "Resource": "*",
        }));
    }
    if !topic_arns.is_empty() {
        // What eqs's sqs backend calls for topics: reading the subscriptions (and their names,
        // tags of the queues), publishing, and keeping the ones it is asked to make.
        statements.push(json!({
            "Sid": "Topics", "Effect": "Allow",
            "Action": ["sns:Publish", "sns:Subscribe", "sns:Unsubscribe", "sns:ListSubscriptionsByTopic",
                       "sns:GetSubscriptionAttributes", "sns:ListTagsForResource", "sns:CreateTopic", "sns:TagResource"],
            "Resource": topic_arns,
        }));
        statements.push(json!({
            "Sid": "ListTopics", "Effect": "Allow", "Action": ["sns:ListTopics"], "Resource": "*",
        }));
        statements.push(json!({
            "Sid": "SubscriptionQueues", "Effect": "Allow",
            "Action": ["sqs:ListQueueTags", "sqs:TagQueue", "sqs:UntagQueue", "sqs:SetQueueAttributes"],
            "Resource": queue_arns.clone(),
        }));
    }
    if !bucket_arns.is_empty() {
        statements.push(json!({
            "Sid": "Buckets", "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "s3:AbortMultipartUpload",
                       "s3:ListMultipartUploadParts"],
            "Resource": bucket_arns,
        }));
    }
    if !table_arns.is_empty() {
        statements.push(json!({
            "Sid": "Tables", "Effect": "Allow",
            "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:UpdateItem",
                       "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:DescribeTable"],
            "Resource": table_arns,
        }));
    }
    let mut role = json!({
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{ "Effect": "Allow", "Principal": { "Service": ["ec2.amazonaws.com", "ecs-tasks.amazonaws.com"] }, "Action": "sts:AssumeRole" }],
            },
        },
    });
    if !statements.is_empty() {
        role["Properties"]["Policies"] = json!([{ "PolicyName": "exoflow-proxies", "PolicyDocument": { "Version": "2012-10-17", "Statement": statements } }]);
    }
    resources.insert("ProxyRole".into(), role);

    let mut parameters = Map::new();
    let mut outputs = Map::new();
    outputs.insert(
        "ProxyRoleArn".into(),
        json!({ "Description": "Role the proxies run as", "Value": { "Fn::GetAtt": ["ProxyRole", "Arn"] } }),
    );
    let affinity = &m.compute.platform.affinity;
    if affinity.contains(&Affinity::Vms) || affinity.contains(&Affinity::K8s) {
        parameters.insert(
            "SubnetIds".into(),
            json!({ "Type": "List<AWS::EC2::Subnet::Id>", "Description": "Subnets for the app's instances and tasks" }),
        );
    }
    if affinity.contains(&Affinity::K8s) {
        ecs_task(m, &mut resources, &mut parameters);
    }
    if affinity.contains(&Affinity::Vms) {
        parameters.insert(
            "InstanceType".into(),
            json!({ "Type": "String", "Default": "t3.small", "Description": "Instance type" }),
        );
        let image = m.app.vm.as_ref().map(|v| v.image.clone()).unwrap_or_default();
        parameters.insert("ImageId".into(), json!({ "Type": "AWS::EC2::Image::Id", "Default": image, "Description": "The app's machine image (with the proxies in /usr/local/bin)" }));
        resources.insert("InstanceProfile".into(), json!({ "Type": "AWS::IAM::InstanceProfile", "Properties": { "Roles": [{ "Ref": "ProxyRole" }] } }));
        resources.insert(
            "LaunchTemplate".into(),
            json!({
                "Type": "AWS::EC2::LaunchTemplate",
                "Properties": {
                    "LaunchTemplateData": {
                        "ImageId": { "Ref": "ImageId" },
                        "InstanceType": { "Ref": "InstanceType" },
                        "IamInstanceProfile": { "Arn": { "Fn::GetAtt": ["InstanceProfile", "Arn"] } },
                        "MetadataOptions": { "HttpTokens": "required", "HttpEndpoint": "enabled" },
                        "EbsOptimized": true,
                        "BlockDeviceMappings": [{ "DeviceName": "/dev/xvda", "Ebs": { "Encrypted": true, "VolumeType": "gp3", "VolumeSize": 20 } }],
                        "UserData": { "Fn::Base64": boot_script(m) },
                    },
                },
            }),
        );
        let (min, max) =
            m.autoscale.as_ref().map_or((m.replicas, m.replicas), |a| (a.min_replicas, a.max_replicas));
        resources.insert(
            "AutoScalingGroup".into(),
            json!({
                "Type": "AWS::AutoScaling::AutoScalingGroup",
                "Properties": {
                    "LaunchTemplate": { "LaunchTemplateId": { "Ref": "LaunchTemplate" }, "Version": { "Fn::GetAtt": ["LaunchTemplate", "LatestVersionNumber"] } },
                    "MinSize": min.to_string(),
                    "MaxSize": max.to_string(),
                    "VPCZoneIdentifier": { "Ref": "SubnetIds" },
                },
            }),
        );
    }
    let mut template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!("ExoFlow resources for {}: queues, buckets, tables and the proxies' role", m.name),
        "Resources": resources,
        "Outputs": outputs,
    });
    if !parameters.is_empty() {
        template["Parameters"] = Value::Object(parameters);
    }
    let mut files = Files::new();
    files.insert(
        "cloudformation/template.json".into(),
        serde_json::to_string_pretty(&template).unwrap_or_default() + "\n",
    );
    files
}

/// The container affinity on AWS: an ECS (Fargate) service whose task holds the app and one
/// proxy container per service used. Containers of a task share its loopback, so the proxies
/// listen on 127.0.0.1 without a token; their configs travel as `EXO_CONFIG_YAML` (no mounted
/// files on Fargate); AWS credentials come from the task role (the proxies' role), and any other
/// credential (a standby Azure account's key, the key for sealed values) from Secrets Manager or
/// SSM parameters the operator names.
fn ecs_task(m: &Manifest, resources: &mut Map<String, Value>, parameters: &mut Map<String, Value>) {
    parameters.insert(
        "TaskSecurityGroupIds".into(),
        json!({ "Type": "List<AWS::EC2::SecurityGroup::Id>", "Description": "Security groups of the app's tasks" }),
    );
    let secret_env = credential_env_of(m, |p| p.kind != ProviderKind::Aws);
    let mut secrets = Vec::new();
    let mut secret_arns = Vec::new();
    for name in &secret_env {
        let parameter = logical("Secret", &name.to_ascii_lowercase().replace('_', "-"));
        parameters.insert(
            parameter.clone(),
            json!({ "Type": "String", "Description": format!("ARN of the Secrets Manager secret or SSM parameter holding {name}") }),
        );
        secrets.push(json!({ "Name": name, "ValueFrom": { "Ref": parameter } }));
        secret_arns.push(json!({ "Ref": parameter }));
    }
    resources.insert(
        "TaskLogGroup".into(),
        json!({
            "Type": "AWS::Logs::LogGroup",
            "Properties": { "LogGroupName": format!("/exoflow/{}", m.name), "RetentionInDays": 365 },
            "Metadata": skip(&[("CKV_AWS_158", "log group encrypted with the service-owned key; a customer KMS key is an operator choice")]),
        }),
    );
    let logging = |stream: &str| {
        json!({ "LogDriver": "awslogs", "Options": {
            "awslogs-group": { "Ref": "TaskLogGroup" }, "awslogs-region": { "Ref": "AWS::Region" }, "awslogs-stream-prefix": stream,
        } })
    };
    let mut execution_role = json!({
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [{ "Effect": "Allow", "Principal": { "Service": ["ecs-tasks.amazonaws.com"] }, "Action": "sts:AssumeRole" }],
            },
            "ManagedPolicyArns": [{ "Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy" }],
        },
    });
    if !secret_arns.is_empty() {
        execution_role["Properties"]["Policies"] = json!([{
            "PolicyName": "exoflow-task-secrets",
            "PolicyDocument": { "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": ["secretsmanager:GetSecretValue", "ssm:GetParameters"], "Resource": secret_arns,
            }] },
        }]);
    }
    resources.insert("TaskExecutionRole".into(), execution_role);

    // The proxies' data (the failover journals) on the task's ephemeral storage: the roots are
    // read-only.
    let proxies = sidecars(m, ProxyHost::EcsTask, &|_| super::DATA_DIR.to_owned());
    let mut containers = Vec::new();
    let mut app_env = Vec::new();
    for s in &proxies {
        app_env.push(json!({ "Name": s.endpoint_env, "Value": format!("http://127.0.0.1:{}", s.port) }));
        let mut container = json!({
            "Name": s.name,
            "Image": proxy_image(m, s.name),
            "Essential": true,
            "ReadonlyRootFilesystem": true,
            "Privileged": false,
            "User": "65532",
            "Environment": [{ "Name": "EXO_CONFIG_YAML", "Value": s.config }],
            "MountPoints": [{ "SourceVolume": "exoflow-data", "ContainerPath": super::DATA_DIR, "ReadOnly": false }],
            "LogConfiguration": logging(s.name),
        });
        if !secrets.is_empty() {
            container["Secrets"] = json!(secrets);
        }
        containers.push(container);
    }
    let mut app = json!({
        "Name": "app",
        "Image": m.app_image(),
        "Essential": true,
        "ReadonlyRootFilesystem": true,
        "Privileged": false,
        "Environment": app_env,
        "DependsOn": proxies.iter().map(|s| json!({ "ContainerName": s.name, "Condition": "START" })).collect::<Vec<_>>(),
        "LogConfiguration": logging("app"),
    });
    if let Some(port) = m.app.container.port {
        app["PortMappings"] = json!([{ "ContainerPort": port, "Protocol": "tcp" }]);
    }
    containers.insert(0, app);
    resources.insert(
        "TaskDefinition".into(),
        json!({
            "Type": "AWS::ECS::TaskDefinition",
            "Properties": {
                "Family": m.name,
                "RequiresCompatibilities": ["FARGATE"],
                "NetworkMode": "awsvpc",
                "Cpu": "512",
                "Memory": "1024",
                "TaskRoleArn": { "Fn::GetAtt": ["ProxyRole", "Arn"] },
                "ExecutionRoleArn": { "Fn::GetAtt": ["TaskExecutionRole", "Arn"] },
                "ContainerDefinitions": containers,
                "Volumes": [{ "Name": "exoflow-data" }],
            },
        }),
    );
    resources.insert(
        "EcsCluster".into(),
        json!({ "Type": "AWS::ECS::Cluster", "Properties": { "ClusterSettings": [{ "Name": "containerInsights", "Value": "enabled" }] } }),
    );
    resources.insert(
        "EcsService".into(),
        json!({
            "Type": "AWS::ECS::Service",
            "Properties": {
                "Cluster": { "Ref": "EcsCluster" },
                "TaskDefinition": { "Ref": "TaskDefinition" },
                "LaunchType": "FARGATE",
                "DesiredCount": m.replicas,
                "NetworkConfiguration": { "AwsvpcConfiguration": {
                    "AssignPublicIp": "DISABLED",
                    "Subnets": { "Ref": "SubnetIds" },
                    "SecurityGroups": { "Ref": "TaskSecurityGroupIds" },
                } },
            },
        }),
    );
}
