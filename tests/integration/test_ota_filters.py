"""The rollout filters inside Ansible: ota_plan's sizes as a play's serial, ota_report over real hostvars.

No VM: the nodes are local; each one's update record is set as ota.yml sets it. The
rollout on VMs is molecule/ota-rollout's.
"""

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent

PLAYBOOK = """---
- name: Plan
  hosts: all
  gather_facts: false
  tasks:
    - name: Record the state before
      ansible.builtin.set_fact:
        ota_record: {before: {slot: a, version: factory, pending: false}}
    - name: Plan
      ansible.builtin.set_fact:
        ota_plan: "{{ ansible_play_hosts_all | n3x.cluster.ota_plan(1, '34%') }}"
      delegate_to: localhost
      delegate_facts: true
      run_once: true

- name: Roll out
  hosts: all
  serial: "{{ hostvars['localhost'].ota_plan.sizes }}"
  max_fail_percentage: 0
  gather_facts: false
  tasks:
    - name: Record the batch and a verdict (n3 goes back to slot a)
      ansible.builtin.set_fact:
        ota_record: >-
          {{ ota_record | combine({'started': true, 'installed_slot': 'b',
             'after': {'slot': 'a' if inventory_hostname == 'n3' else 'b',
                       'version': 'factory' if inventory_hostname == 'n3' else '2.0', 'pending': false}}) }}
    - name: Report
      ansible.builtin.set_fact:
        ota_report_now: "{{ hostvars['localhost'].ota_plan | n3x.cluster.ota_report(hostvars) }}"
      delegate_to: localhost
      delegate_facts: true
      run_once: true
    - name: Write it
      ansible.builtin.copy:
        dest: "{{ report }}"
        content: "{{ hostvars['localhost'].ota_report_now.text }}"
        mode: "0644"
      delegate_to: localhost
      run_once: true
    - name: Stop
      ansible.builtin.fail:
        msg: stop
      when: (hostvars['localhost'].ota_report_now.rows | selectattr('node', 'equalto', inventory_hostname) | first).result != 'updated'
"""


def test_plan_drives_serial_and_the_report_stops_after_the_failing_batch(tmp_path):
    playbook = tmp_path / "rollout.yml"
    playbook.write_text(PLAYBOOK)
    report = tmp_path / "report.txt"
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1"}
    argv = [str(BIN / "ansible-playbook"), "-i", "n1,n2,n3,n4,n5,n6,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"]
    result = subprocess.run([*argv, "-e", f"report={report}", str(playbook)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stdout[-3000:]
    rows = [line.split() for line in report.read_text().splitlines()]
    # 6 nodes: canary n1, then batches of 34 % (3): n2-n4 (n3 rolls back), n5-n6 never start.
    assert [(row[0], row[1]) for row in rows[1:]] == [("n1", "canary"), ("n2", "1"), ("n3", "1"), ("n4", "1"), ("n5", "2"), ("n6", "2")]
    results = {row[0]: next(word for word in row if word in ("updated", "rolled-back", "failed", "untouched")) for row in rows[1:]}
    assert results == {"n1": "updated", "n2": "updated", "n3": "rolled-back", "n4": "updated", "n5": "untouched", "n6": "untouched"}
    # The later batch never ran a task of the rollout play.
    assert "ok: [n5]" not in result.stdout.split("PLAY [Roll out]")[1]
